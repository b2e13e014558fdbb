"""Reading the Plotly figures an AppTest run produced: the JSON spec back into a Figure."""

from __future__ import annotations

import base64
import json
from typing import Any

import numpy as np
import plotly.graph_objects as go


def _decode(value: Any) -> Any:
    # Plotly's JSON packs numeric arrays as {"dtype", "bdata"[, "shape"]}; unpack them to lists.
    if isinstance(value, dict):
        if "bdata" in value and "dtype" in value:
            array = np.frombuffer(base64.b64decode(value["bdata"]), dtype=np.dtype(value["dtype"]))
            if "shape" in value:
                shape = [int(n) for n in str(value["shape"]).split(",")]
                array = array.reshape(shape)
            return array.tolist()
        return {key: _decode(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_decode(item) for item in value]
    return value


def figures(at: Any) -> list[go.Figure]:
    """Every st.plotly_chart of the last run, in order, as Figures with plain-list data."""
    return [go.Figure(_decode(json.loads(element.proto.spec))) for element in at.get("plotly_chart")]
