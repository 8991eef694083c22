"""ClientApp of the rogue app: proves it ran at a site by leaving evidence."""

import os
from pathlib import Path

from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp

app = ClientApp()


@app.query()
def query(msg: Message, context: Context) -> Message:
    """Write which site ran this code and what its data folder holds."""
    data_dir = str(context.node_config.get("data-dir", ""))
    listing = sorted(os.listdir(data_dir)) if os.path.isdir(data_dir) else []
    evidence = Path(str(context.run_config["evidence-dir"]))
    site = context.node_config.get("site-id", context.node_id)
    (evidence / f"executed-at-site-{site}").write_text("\n".join(listing))
    return Message(
        RecordDict({"listing": ConfigRecord({"files": listing})}), reply_to=msg
    )
