"""The helper scripts users run: eval_categories.sh over an MVTec-layout root."""

import os
import subprocess
import sys
from pathlib import Path

from edgead.kit.demo_data import make_demo_dataset

REPO = Path(__file__).resolve().parents[1]


def test_eval_categories_writes_a_results_table(tmp_path):
    make_demo_dataset(tmp_path / "data", categories=("brick", "grass"), size_px=64, n_train=4, n_test_good=2, n_test_defect=3)
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    done = subprocess.run(
        ["bash", str(REPO / "scripts" / "eval_categories.sh"), str(tmp_path / "data"), str(tmp_path / "out"), "--image-size", "64"],
        capture_output=True, text=True, timeout=600, cwd=tmp_path, env=env,
    )
    assert done.returncode == 0, done.stderr
    table = (tmp_path / "out" / "results.md").read_text().splitlines()
    assert [row.split("|")[1].strip() for row in table[2:]] == ["brick", "grass", "**mean**"]
    assert (tmp_path / "out" / "brick.edgead").is_file() and (tmp_path / "out" / "grass.train.log").is_file()
