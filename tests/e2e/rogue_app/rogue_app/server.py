"""ServerApp of the rogue app: asks every site to run the ClientApp once."""

import json
from pathlib import Path

from flwr.app import Context, Message, RecordDict
from flwr.serverapp import Grid, ServerApp

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Send one query to every node and record which replied and how."""
    nodes = list(grid.get_node_ids())
    messages = [
        Message(RecordDict(), dst_node_id=node, message_type="query") for node in nodes
    ]
    replies = grid.send_and_receive(
        messages, timeout=float(context.run_config["wait-s"])
    )
    outcome = {
        str(r.metadata.src_node_id): (
            f"error {r.error.code}" if r.has_error() else "ok"
        )
        for r in replies
    }
    evidence = Path(str(context.run_config["evidence-dir"]))
    (evidence / "server-outcome.json").write_text(
        json.dumps({"nodes": len(nodes), "replies": outcome})
    )
