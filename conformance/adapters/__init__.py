"""Adapters: how the suite creates, steps and reads an implementation under test."""

from adamw_conformance.adapters.base import Adapter, GroupSetup, ParamState, Run, Setup

__all__ = ["Adapter", "GroupSetup", "ParamState", "Run", "Setup"]
