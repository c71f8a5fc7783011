"""The A2A wire format wsctl speaks: a JSON-RPC `message/send` with one text part.

Built by the CLI (`wsctl send`), the restart-context delivery and the chaos
workload alike, so the three cannot drift apart.
"""

from __future__ import annotations

import uuid
from typing import Any


def message_send(text: str, message_id: str | None = None) -> dict[str, Any]:
    return {
        "jsonrpc": "2.0",
        "id": message_id or str(uuid.uuid4()),
        "method": "message/send",
        "params": {"message": {"kind": "message", "role": "user",
                               "messageId": message_id or str(uuid.uuid4()),
                               "parts": [{"kind": "text", "text": text}]}},
    }
