"""Proof on the engine itself: the target's real toolchain compiles the written model and runs it on
its simulator (``--check-on-engine``). Toolchains live in venvs of their own (``toolchains``); one model
goes through one in a subprocess (``runner``); ``check`` compares the rewrite with the original."""

from .check import EngineCheck, EngineSpec, check_on_engine, check_result, require
from .toolchains import TOOLCHAINS, engine_python

__all__ = ["TOOLCHAINS", "EngineCheck", "EngineSpec", "check_on_engine", "check_result", "engine_python", "require"]
