"""The distribution builds as a wheel whose import names are dllm, dllm.samplers, dllm.eval, dllm.distill,
dllm.configs (with every YAML and the shipped checkpoints), and nothing named `eval` lands top-level."""
from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_contents_and_imports(tmp_path):
    r = subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(tmp_path), str(ROOT)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "absent from the `packages` configuration" not in r.stdout + r.stderr   # every data folder is declared
    wheel = next(tmp_path.glob("dllm-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "dllm-0.1.0.dist-info/licenses/LICENSE" in names
    assert "Apache License" in (ROOT / "LICENSE").read_text()[:200] and "END OF TERMS AND CONDITIONS" in \
        (ROOT / "LICENSE").read_text()
    tops = {n.split("/")[0] for n in names if not n.startswith("dllm-")}
    assert tops == {"dllm"}, tops
    for f in ["dllm/samplers/threshold.py", "dllm/eval/tasks/gsm8k.py", "dllm/eval/run.py", "dllm/distill/cli.py",
              "dllm/configs/eval.yaml", "dllm/configs/sampler/s2d2.yaml", "dllm/configs/cache/block_fused.yaml",
              "dllm/configs/model/tiny_sdar.yaml", "dllm/configs/task/synthetic.yaml"]:
        assert f in names, f
    yamls = {str(p.relative_to(ROOT / "configs")) for p in (ROOT / "configs").rglob("*.yaml")}
    assert yamls <= {n[len("dllm/configs/"):] for n in names if n.startswith("dllm/configs/")}, "a config is missing"
    for ckpt in (ROOT / "dllm" / "checkpoints").glob("*/model.safetensors"):
        assert f"dllm/checkpoints/{ckpt.parent.name}/model.safetensors" in names
    # the unpacked wheel imports on its own (dependencies from this environment)
    zipfile.ZipFile(wheel).extractall(tmp_path / "site")
    code = ("import dllm, dllm.samplers, dllm.eval.tasks.synthetic, dllm.distill, dllm.configs;"
            "assert dllm.__file__.startswith(%r)" % str(tmp_path / "site"))
    r = subprocess.run([sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, {str(tmp_path / 'site')!r}); {code}"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
