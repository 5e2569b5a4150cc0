"""A gate's Params and Thresholds: frozen-in-shape records that validate themselves.

Every gate declares both as `@dataclass class Params(GateSettings)`. Numbers must be finite
and ≥ 0; those named in `positive` must be > 0; `validate()` adds rules across fields. A bad
value is one ConfigError naming the gate, the setting and the variable that sets it, raised
when the record is made — before a stack is touched, not halfway through a scenario.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import ClassVar

from harness.config import gate_variable
from harness.errors import ConfigError


@dataclass
class GateSettings:
    #: numeric fields that must be > 0 (every other number must be ≥ 0)
    positive: ClassVar[tuple[str, ...]] = ()
    #: the gate these settings belong to (set by Gate.__init_subclass__), for messages
    gate_id: ClassVar[str] = "?"

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                continue
            if not math.isfinite(value) or value < 0 or (value == 0 and f.name in self.positive):
                self.refuse(f.name, "> 0" if f.name in self.positive else "≥ 0")
        self.validate()

    def validate(self) -> None:
        """Rules across fields; call `refuse` for a value that breaks one."""

    def refuse(self, name: str, rule: str) -> None:
        variable = gate_variable(self.gate_id, name)
        raise ConfigError(f"gate {self.gate_id}: {name}={getattr(self, name)!r} must be {rule} (set with {variable})")
