"""Adapters: how the suite creates, steps and reads an implementation under test."""

from conformance.adapters.base import Adapter, GroupSetup, ParamState, Run, Setup

__all__ = ["Adapter", "GroupSetup", "ParamState", "Run", "Setup"]
