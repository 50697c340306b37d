import json
import os
import pickle

import pytest
import torch

from advgen.errors import InputError
from advgen.files import append_jsonl, atomic_write_json, read_jsonl, safe_torch_load


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    legacy = tmp_path / "legacy.pt"
    legacy.write_bytes(pickle.dumps({"state_dict": _Payload(marker)}))
    zipped = tmp_path / "zipped.pt"
    torch.save({"state_dict": _Payload(marker)}, zipped)
    for path in (legacy, zipped):
        with pytest.raises(InputError, match="weights_only"):
            safe_torch_load(path)
    assert not marker.exists()


def test_atomic_json_replaces_whole_file(tmp_path):
    path = tmp_path / "out" / "a.json"
    atomic_write_json(path, {"a": 1})
    atomic_write_json(path, {"b": 2})
    assert json.loads(path.read_text()) == {"b": 2}
    assert [p.name for p in path.parent.iterdir()] == ["a.json"]


def test_jsonl_drops_torn_last_line(tmp_path):
    path = tmp_path / "r.jsonl"
    append_jsonl(path, [{"i": 0}, {"i": 1}])
    with open(path, "a") as f:
        f.write('{"i": 2, "tor')
    assert read_jsonl(path) == [{"i": 0}, {"i": 1}]
    append_jsonl(path, [{"i": 2}])
    assert read_jsonl(path) == [{"i": 0}, {"i": 1}, {"i": 2}]


def test_truncated_pickle_is_input_error(tmp_path):
    """A 4-byte file makes torch's unpickler raise struct.error, which must still be an InputError."""
    import pytest

    from advgen.errors import InputError
    from advgen.files import safe_torch_load

    bad = tmp_path / "junk.pt"
    bad.write_bytes(b"junk")
    with pytest.raises(InputError, match="corrupted"):
        safe_torch_load(bad)
