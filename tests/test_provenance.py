"""Every run records the environment lock it ran under: the lock file's sha256, and whether the installed
packages are exactly the locked versions (a drifted environment must not pass for the locked one)."""

import hashlib
from importlib import metadata

from peftbench.measure import LOCK_FILE, environment_lock


def test_the_checkout_lock_is_hashed_and_pins_every_installed_dependency():
    lock = environment_lock()
    assert lock["file"] == "requirements.lock"
    assert lock["sha256"] == hashlib.sha256(LOCK_FILE.read_bytes()).hexdigest()
    pinned = {line.split("==")[0].lower().replace("_", "-") for line in LOCK_FILE.read_text().splitlines()
              if "==" in line and not line.startswith("#")}
    # Transitive dependencies are locked too, not only the direct ones.
    assert {"torch", "transformers", "peft", "datasets", "huggingface-hub", "tokenizers", "numpy", "safetensors",
            "pyarrow", "pytest"} <= pinned


def test_a_drifted_environment_is_reported_package_by_package(tmp_path):
    installed = metadata.version("torch")
    lock = tmp_path / "requirements.lock"
    lock.write_text(f"# a comment line\ntorch=={installed}\ntransformers==0.0.1\nno-such-package==1.0  # gone\n")
    recorded = environment_lock(lock)
    assert recorded["matches"] is False
    assert recorded["differs"] == {
        "transformers": {"locked": "0.0.1", "installed": metadata.version("transformers")},
        "no-such-package": {"locked": "1.0", "installed": None},
    }
    lock.write_text(f"torch=={installed}\n")
    assert environment_lock.__wrapped__(lock) == {"file": "requirements.lock", "matches": True, "differs": {},
                                                  "sha256": hashlib.sha256(lock.read_bytes()).hexdigest()}


def test_no_lock_file_records_none(tmp_path):
    assert environment_lock(tmp_path / "absent.lock") is None
