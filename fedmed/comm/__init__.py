"""What leaves a site: tensor selection, validation, codecs and byte accounting."""
