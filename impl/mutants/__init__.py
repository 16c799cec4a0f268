"""The mutant zoo: optimizers that each carry exactly one realistic defect.

`ZOO` is the machine-readable registry the kill matrix (tests/test_kill_matrix.py) and the
detection report (`python -m adamw_conformance.tools.detection`) iterate over: one `Mutant` per
defect, with
the `--impl` target that runs it, the catalogue id of the property that must kill it, and the
extra suite options it needs (a dtype where the defect is a precision one). Each mutant's
docstring says, in words, which property kills it and why; `Mutant.doc` reads it.

`MUTANTS` (the seeded formula kernels of `impl.mutants.formula`) is kept for the bound tests.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from adamw_conformance.core import catalogue

from impl.mutants.formula import MUTANTS


@dataclass(frozen=True)
class Mutant:
    """One defect: `target` is what --impl takes, `kills` the catalogue id that must fail."""

    name: str
    target: str
    kills: str
    args: tuple[str, ...] = ()

    @property
    def doc(self) -> str:
        module, _, attr = self.target.partition(":")
        obj = getattr(importlib.import_module(module), attr) if attr else None
        if obj is None:
            module, _, attr = self.target.rpartition(".")
            obj = getattr(importlib.import_module(module), attr)
        return " ".join((obj.__doc__ or "").split())

    @property
    def node(self) -> str:
        """The node id of the property's test: 'bias.step_one' -> test_bias.py::test_step_one."""
        return catalogue.node(self.kills)

    def argv(self) -> list[str]:
        """The suite options that run this mutant (without a profile)."""
        return [f"--impl={self.target}", *self.args]


def _m(target: str, kills: str, *args: str, name: str | None = None) -> Mutant:
    return Mutant(name or target.rpartition(":")[2] or target, target, kills, tuple(args))


BF16 = "--dtype=bfloat16"
GROUP_COUNTER = "--conventions=counter=group"

ZOO: tuple[Mutant, ...] = (
    # bias correction and the step counter
    _m("impl.mutants.bias:NoBiasCorrection", "bias.step_one"),
    _m("impl.mutants.bias:NoSecondMomentCorrection", "bias.step_one"),
    _m("impl.mutants.bias:CounterStartsAtOne", "bias.step_one"),
    _m("impl.mutants.bias:AdvancesWithoutGradient", "bias.counter"),
    _m("impl.mutants.bias:GlobalCounter", "bias.counter"),
    _m("impl.mutants.bias:GroupCounter", "bias.counter"),
    _m("impl.mutants.bias:Bfloat16Counter", "bias.counter"),
    _m("impl.mutants.bias:Float16Counter", "bias.counter"),
    _m("impl.mutants.groups:SharedCounter", "groups.order"),
    # eps
    _m("impl.mutants.scale:EpsInsideSqrt", "scale.power_of_two"),
    _m("impl.mutants.eps:EpsFloor", "bias.step_one"),
    _m("impl.mutants.eps:EpsHat", "bias.step_one"),
    # moments
    _m("impl.mutants.moments:SwappedBetas", "exact.one_step"),
    _m("impl.mutants.moments:AbsGradSecondMoment", "bias.step_one"),
    _m("impl.mutants.moments:FirstMomentFromGradient", "bias.step_one"),
    # weight decay
    _m("impl.mutants.decouple:CoupledDecay", "decouple.moments"),
    # torch.optim.Adam is judged as the Adam+L2 it is by default; offered as an AdamW, it is one.
    _m("torch.optim.Adam", "decouple.moments", "--rule=adamw", name="torch.optim.Adam"),
    _m("impl.mutants.decouple:L2InGradient", "decouple.moments"),
    _m("impl.mutants.decouple:DecayWithoutLR", "decouple.decay_only"),
    _m("impl.mutants.decouple:DecayRateOff", "decouple.decay_only"),
    _m("impl.mutants.decouple:DecayedMoments", "decouple.moments"),
    _m("impl.mutants.decouple:DecayInNumerator", "decouple.uniform"),
    _m("impl.foreign:ForeignUncoupledDecay", "decouple.decay_only"),
    # parameter groups, missing and zero gradients
    _m("impl.mutants.groups:DefaultWeightDecay", "groups.no_decay"),
    _m("impl.mutants.groups:DefaultLR", "groups.no_decay"),
    _m("impl.mutants.groups:NoneAsZero", "groups.none_grad"),
    _m("impl.mutants.groups:DecaysWithoutGradient", "groups.none_grad"),
    _m("impl.mutants.groups:SkipsZeroGradient", "groups.none_grad"),
    # learning-rate schedules
    _m("impl.mutants.schedule:DecayUsesInitialLR", "schedule.current_lr"),
    _m("impl.mutants.schedule:StepUsesInitialLR", "schedule.current_lr"),
    _m("impl.mutants.schedule:LrFoldedIntoDenominator", "schedule.lr_zero"),
    # scale and mixed precision
    _m("impl.mutants.scale:GradNormClipped", "scale.invariance"),
    _m("impl.mutants.scale:DecaysSkippedSteps", "scale.grad_scaler"),
    _m("impl.mutants.scale:ignores_found_inf", "scale.grad_scaler"),
    _m("impl.mutants.scale:IgnoresFoundInfAfterUnscale", "scale.grad_scaler"),
    # arithmetic precision
    _m("impl.mutants.dtype:Bfloat16Arithmetic", "dtype.precision", BF16),
    _m("impl.mutants.dtype:ApproxSqrt", "exact.one_step"),
    # save and load
    _m("impl.mutants.state:LoadResetsStep", "state.round_trip"),
    _m("impl.mutants.state:ForgetsSecondMoment", "state.round_trip"),
    _m("impl.mutants.state:BetaPowerNotSaved", "state.round_trip"),
    # state layouts (impl/layouts.py) with a defect
    _m("impl.mutants.layouts:HalfDebiased", "exact.one_step"),
    _m("impl.mutants.layouts:BetaPowerSwapped", "bias.step_one"),
    # block-quantized states (impl/quantized.py)
    _m("impl.mutants.quantized:UnsortedMap", "exact.one_step"),
    _m("impl.mutants.quantized:TruncatedCode", "exact.one_step"),
    _m("impl.mutants.quantized:NeighbourAbsmax", "exact.one_step"),
    _m("impl.mutants.quantized:OneCodeMoved", "exact.one_step"),
    _m("impl.mutants.quantized:FineCodeMoved", "exact.one_step"),
    _m("impl.mutants.quantized:SignedMapForV", "exact.one_step"),
    _m("impl.mutants.quantized:HalfBlockAbsmax", "exact.one_step"),
    _m("impl.mutants.quantized:SignedAbsmax", "exact.one_step"),
    _m("impl.mutants.quantized:StaleAbsmax", "exact.one_step"),
    _m("impl.mutants.quantized:PartialBlockNeighbourAbsmax", "exact.one_step"),
    _m("impl.mutants.quantized:NegativeTruncated", "exact.one_step"),
    _m("impl.mutants.quantized:EveryNthCodeUp", "exact.one_step"),
    _m("impl.mutants.quantized:TinyCodesFlushed", "exact.one_step"),
    _m("impl.mutants.quantized:LastBlockNotRequantized", "exact.one_step"),
    # precision techniques (impl/precision_techniques.py) with a defect
    _m("impl.mutants.precision:KahanCompensationDropped", "dtype.compensation", BF16),
    _m("impl.mutants.precision:KahanCompensationNotSaved", "state.round_trip", BF16),
    _m("impl.mutants.precision:BiasedStochasticRounding", "dtype.stochastic_rounding", BF16),
    _m("impl.mutants.precision:ReusedStochasticDraw", "dtype.stochastic_rounding", BF16),
    _m("impl.mutants.precision:KahanSignFlipped", "dtype.compensation", BF16),
    _m("impl.mutants.precision:KahanNotRestored", "state.round_trip", BF16),
    _m("impl.mutants.precision:KahanResetEveryFourSteps", "dtype.compensation", BF16),
    _m("impl.mutants.precision:KahanCompensationOnce", "dtype.compensation", BF16),
    _m("impl.mutants.precision:StochasticLowBits", "dtype.stochastic_rounding", BF16),
    _m("impl.mutants.precision:StochasticEightBitDraw", "dtype.stochastic_rounding", BF16),
    _m("impl.mutants.precision:StochasticSharedDraw", "dtype.stochastic_rounding", BF16),
    _m("impl.mutants.precision:StochasticCoinFlip", "dtype.stochastic_rounding", BF16),
    _m("impl.mutants.precision:StochasticDrawReusedInPairs", "dtype.stochastic_rounding", BF16),
    _m("impl.mutants.precision:StochasticSmallFractionDown", "dtype.stochastic_rounding", BF16),
    _m("impl.mutants.precision:RoundedAwayFromZero", "dtype.stochastic_rounding", BF16),
    # input handling
    _m("impl.mutants.input:NoValidation", "input.validation"),
    _m("impl.mutants.input:AssertValidation", "input.validation"),
    _m("impl.mutants.input:ZeroNonFinite", "input.nonfinite"),
    _m("impl.mutants.input:NormClipped", "input.nonfinite"),
    # the other rules of the lineage
    _m("impl.mutants.rules:AdamaxEpsOutsideMax", "exact.one_step"),
    # seeded formula errors in the functional kernel
    _m("impl.mutants.formula:eps_inside_sqrt", "scale.power_of_two"),
    _m("impl.mutants.formula:no_bias_correction", "bias.step_one"),
    _m("impl.mutants.formula:decay_after_update", "bias.step_one"),
    _m("impl.mutants.formula:eps_doubled", "bias.step_one"),
    # sharded: a flattened, padded ZeRO-1/2 layout modelled in plain torch (impl/sharded/flat.py),
    # one counter per group as DeepSpeed keeps it
    _m("impl.sharded.flat:GroupStepNotSaved", "state.round_trip", GROUP_COUNTER),
    _m("impl.sharded.flat:StraddlerDecayedTwice", "shard.layouts", GROUP_COUNTER),
    _m("impl.sharded.flat:NoDecayMappingLost", "shard.layouts", GROUP_COUNTER),
    _m("impl.sharded.flat:EmptyShardSkipsStep", "shard.layouts", GROUP_COUNTER),
)


def by_name(name: str) -> Mutant:
    for m in ZOO:
        if m.name == name:
            return m
    raise KeyError(f"no mutant named {name!r}; known: {', '.join(m.name for m in ZOO)}")


__all__ = ["BF16", "MUTANTS", "ZOO", "Mutant", "by_name"]
