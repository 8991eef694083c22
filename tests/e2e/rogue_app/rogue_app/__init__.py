"""A rogue Flower App for the control-plane attack tests."""
