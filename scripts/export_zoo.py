"""Whole public architectures, exported as users export them, and what poolfix makes of each.

    python scripts/exporters/setup_env.py models     # torch 2.9.1, torchvision, timm, transformers
    python scripts/export_zoo.py --export            # .exporters/zoo/NAME.{ts,dynamo}.onnx (git-ignored)
    python scripts/export_zoo.py --table             # poolfix on each: sites found / rewritten / left
    python scripts/export_zoo.py --table --target rknn

Random weights from each library's own initialisation (nothing is downloaded), batch 1, TorchScript
(opset 17) and dynamo (opset 20, as torch 2.9 writes its transformers with Gelu) exports. The models
stay out of the repository (4.2 GB for the 38 exports); the table goes into the README.
CNNs with heads that pool, hybrids, and transformers whose reductions are statistics: the last
kind must come out with nothing rewritten.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ZOO = ROOT / ".exporters" / "zoo"
VENV = ROOT / ".exporters" / "models" / "venv" / "bin" / "python"

# name -> (library, constructor, input size, kind): kind "cnn" (has pools), "hybrid", "transformer"
ARCHITECTURES = {
    "tv_resnet18": ("torchvision", "resnet18", 224, "cnn"),
    "tv_mobilenet_v3_small": ("torchvision", "mobilenet_v3_small", 224, "cnn"),
    "tv_convnext_tiny": ("torchvision", "convnext_tiny", 224, "cnn"),
    "tv_efficientnet_b0": ("torchvision", "efficientnet_b0", 224, "cnn"),
    # issue 28: their own ceil_mode pools (googlenet, squeezenet, resnest, ecaresnet), a 3D head (r3d_18)
    "tv_googlenet": ("torchvision", "googlenet", 224, "cnn"),
    "tv_squeezenet1_0": ("torchvision", "squeezenet1_0", 224, "cnn"),
    "tv_r3d_18": ("torchvision.video", "r3d_18", 112, "cnn"),
    "timm_resnest14d": ("timm", "resnest14d", 224, "cnn"),
    "timm_ecaresnet26t": ("timm", "ecaresnet26t", 224, "cnn"),
    "tv_swin_t": ("torchvision", "swin_t", 224, "hybrid"),
    "tv_maxvit_t": ("torchvision", "maxvit_t", 224, "hybrid"),
    "tv_vit_b_16": ("torchvision", "vit_b_16", 224, "transformer"),
    "timm_tf_efficientnet_b0": ("timm", "tf_efficientnet_b0", 224, "cnn"),
    "timm_skresnet18": ("timm", "skresnet18", 224, "cnn"),  # issue 27: its dynamo export failed verification
    "timm_poolformer_s12": ("timm", "poolformer_s12", 224, "cnn"),
    "timm_convnextv2_atto": ("timm", "convnextv2_atto", 224, "cnn"),
    "timm_coatnet_nano_rw_224": ("timm", "coatnet_nano_rw_224", 224, "hybrid"),
    "timm_swin_tiny": ("timm", "swin_tiny_patch4_window7_224", 224, "hybrid"),
    "timm_deit_tiny": ("timm", "deit_tiny_patch16_224", 224, "transformer"),
    "hf_convnext": ("transformers", "ConvNext", 224, "cnn"),
    "hf_poolformer": ("transformers", "PoolFormer", 224, "cnn"),
    "hf_mobilenet_v2": ("transformers", "MobileNetV2", 224, "cnn"),
    "hf_vit": ("transformers", "ViT", 224, "transformer"),
    "hf_swin": ("transformers", "Swin", 224, "hybrid"),
    "hf_bert": ("transformers", "Bert", 32, "transformer"),
    "hf_distilbert": ("transformers", "DistilBert", 32, "transformer"),
}


def build(library: str, name: str):
    """(module, example inputs) with random weights; nothing downloaded."""
    import torch

    torch.manual_seed(0)
    if library == "torchvision":
        import torchvision

        kw = {"aux_logits": False, "init_weights": True} if name == "googlenet" else {}
        return getattr(torchvision.models, name)(weights=None, **kw).eval(), None
    if library == "torchvision.video":  # a clip of 16 frames
        import torchvision

        return getattr(torchvision.models.video, name)(weights=None).eval(), (torch.randn(1, 3, 16, 112, 112),)
    if library == "timm":
        import timm

        return timm.create_model(name, pretrained=False).eval(), None
    import transformers

    config = getattr(transformers, f"{name}Config")()
    if name in ("Bert", "DistilBert"):
        model = getattr(transformers, f"{name}Model")(config).eval()
        ids = torch.randint(0, 1000, (1, 32))

        class Text(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.m = model

            def forward(self, input_ids):
                return self.m(input_ids=input_ids).last_hidden_state

        return Text().eval(), (ids,)
    model = getattr(transformers, f"{name}ForImageClassification")(config).eval()

    class Image(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.m = model

        def forward(self, pixel_values):
            return self.m(pixel_values=pixel_values).logits

    return Image().eval(), None


def worker(names: list[str]) -> int:
    """Runs in the models venv: export each architecture twice into ZOO, recording what happened."""
    import contextlib
    import io
    import logging
    import warnings

    import torch

    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    ZOO.mkdir(parents=True, exist_ok=True)
    record = json.loads((ZOO / "manifest.json").read_text()) if (ZOO / "manifest.json").exists() else {}
    for name in names:
        library, ctor, size, kind = ARCHITECTURES[name]
        module, inputs = build(library, ctor)
        inputs = inputs or (torch.randn(1, 3, size, size),)
        entry = {"library": library, "constructor": ctor, "kind": kind, "torch": torch.__version__}
        for exporter in ("ts", "dynamo"):
            path = ZOO / f"{name}.{exporter}.onnx"
            t = time.perf_counter()
            try:
                with torch.no_grad(), contextlib.redirect_stdout(io.StringIO()), \
                        contextlib.redirect_stderr(io.StringIO()):
                    if exporter == "dynamo":
                        torch.onnx.export(module, inputs, path, dynamo=True, opset_version=20, external_data=False)
                    else:
                        torch.onnx.export(module, inputs, path, dynamo=False, opset_version=17)
                entry[exporter] = {"file": path.name, "seconds": round(time.perf_counter() - t, 1)}
            except Exception as e:
                entry[exporter] = {"error": " ".join(str(e).split())[:300]}
            print(f"{name:28s} {exporter:7s} {entry[exporter].get('file') or entry[exporter]['error'][:90]}",
                  flush=True)
        record[name] = entry
        (ZOO / "manifest.json").write_text(json.dumps(record, indent=1) + "\n")
    return 0


def table(target: str | None) -> str:
    """poolfix (verification on) on every exported model: exit code, sites, max error, seconds."""
    record = json.loads((ZOO / "manifest.json").read_text())
    rows = [("model", "kind", "exporter", "exit", "rewritten", "left", "not pools", "max err", "seconds", "note")]
    for name, entry in record.items():
        for exporter in ("ts", "dynamo"):
            path = ZOO / f"{name}.{exporter}.onnx"
            if not path.exists():
                rows.append((name, entry["kind"], exporter, "-", "-", "-", "-", "-", "-", "not exported"))
                continue
            out = ZOO / "out" / (target or "plain") / path.name
            out.parent.mkdir(parents=True, exist_ok=True)
            report = out.with_suffix(".json")
            t = time.perf_counter()
            p = subprocess.run([sys.executable, "-m", "poolfix", str(path), "-o", str(out), "-q", "--report",
                                str(report), *(["--target", target] if target else [])], capture_output=True,
                               text=True, cwd=ROOT, env={"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin"})
            seconds = time.perf_counter() - t
            data = json.loads(report.read_text()) if report.exists() else {}
            checks = (data.get("verification") or {}).get("checks", [])
            err = max((c["max_abs"] for c in checks if c["kind"] in ("output", "site")), default=None)
            note = (p.stderr.strip().splitlines() or [""])[-1][:100] if p.returncode else ""
            rows.append((name, entry["kind"], exporter, str(p.returncode), str(data.get("rewritten", "-")),
                         str(data.get("skipped", "-")), str(data.get("not_pools", "-")),
                         "-" if err is None else f"{err:.2g}", f"{seconds:.1f}", note))
    sys.path.insert(0, str(ROOT / "scripts"))
    from benchlib import markdown_table

    return markdown_table(rows)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--export", action="store_true", help="export every architecture (in the models venv)")
    ap.add_argument("--only", nargs="*", help="architectures to export (default: all)")
    ap.add_argument("--worker", nargs="*", help=argparse.SUPPRESS)
    ap.add_argument("--table", action="store_true", help="run poolfix on every exported model")
    ap.add_argument("--target", help="with --table: poolfix --target NAME")
    args = ap.parse_args(argv)
    if args.worker is not None:
        return worker(args.worker)
    if args.export:
        if not VENV.exists():
            print("no models venv: python scripts/exporters/setup_env.py models", file=sys.stderr)
            return 2
        for name in args.only or list(ARCHITECTURES):  # one process each: a crash is one model's
            subprocess.run([str(VENV), __file__, "--worker", name], cwd=ROOT)
    if args.table:
        print(table(args.target))
    return 0


if __name__ == "__main__":
    sys.exit(main())
