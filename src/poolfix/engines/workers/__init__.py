"""Engine workers: standalone scripts run by an engine toolchain's own Python (its venv pins old numpy,
onnx and protobuf), never imported by poolfix. Each takes one JOB.json and writes RESULT.json; they
need nothing but the standard library, numpy and their toolchain (``fdlog`` beside them). Each file is
named ``*_worker.py``: run as a script, its folder comes first on sys.path, and a worker called
``rknn.py`` would be what ``import rknn`` finds instead of the toolkit."""
