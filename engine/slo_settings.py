"""deck.toml [slo]: the service-level objectives, their per-model and per-endpoint overrides, and
the one place the bounds that apply to an endpoint, a model or a version are resolved.

```toml
[slo]                      # the deck's default bounds
ttft_s = 0.5
itl_s = 0.1
[slo.models."smollm2"]     # a model's own bounds (its replicas, its versions on a modeldeck server)
ttft_s = 1.0
[[endpoints]]              # one endpoint's own bounds
name = "edge"
slo = { ttft_s = 0.2 }
```

Resolution is key by key, the most specific first: the endpoint's `slo`, then the model's table,
then [slo] itself; a key an override leaves out comes from the level below. Below engine.config
(pyproject's layers) so EndpointSettings can carry an override.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

LATENCY_KEYS = {"ttft": "ttft_s", "itl": "itl_s", "e2e": "e2e_s"}
DEFAULT_TARGET = 0.95


class SloBounds(BaseModel):
    """One set of bounds; each optional, none set means no SLO."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    ttft_s: float | None = Field(default=None, gt=0)
    itl_s: float | None = Field(default=None, gt=0)
    e2e_s: float | None = Field(default=None, gt=0)
    error_rate: float | None = Field(default=None, ge=0, le=1)
    # the share of requests that must meet every bound for the SLO to count as met (diagnosis)
    target: float | None = Field(default=None, gt=0, le=1)

    @property
    def target_share(self) -> float:
        return self.target if self.target is not None else DEFAULT_TARGET

    @property
    def latency_bounds(self) -> dict[str, float]:
        """The latency bounds set, by histogram ("ttft", "itl", "e2e")."""
        bounds = {name: getattr(self, key) for name, key in LATENCY_KEYS.items()}
        return {name: bound for name, bound in bounds.items() if bound is not None}

    @property
    def configured(self) -> bool:
        return bool(self.latency_bounds) or self.error_rate is not None

    def under(self, override: "SloBounds | None") -> "SloBounds":
        """These bounds with every key `override` sets replaced by its value."""
        if override is None:
            return self
        chosen = {key: getattr(override, key) for key in SloBounds.model_fields
                  if getattr(override, key) is not None}
        return self.model_copy(update=chosen) if chosen else self


class SloSettings(SloBounds):
    """deck.toml [slo]: the default bounds, `models` (per model name), and `window_s`: the window
    the local server's /metrics attainment and goodput gauges cover (watch and the panes use the
    sampler's 10 s window)."""

    models: dict[str, SloBounds] = {}
    window_s: float = Field(default=60.0, ge=1, le=3600)
    # (model, endpoint override) -> bounds: each is resolved once per loaded deck.toml
    _resolved: dict[tuple[str | None, SloBounds | None], SloBounds | None] = PrivateAttr(
        default_factory=dict)

    @property
    def defaults(self) -> SloBounds:
        return SloBounds(ttft_s=self.ttft_s, itl_s=self.itl_s, e2e_s=self.e2e_s,
                         error_rate=self.error_rate, target=self.target)

    @property
    def any_configured(self) -> bool:
        return self.configured or any(bounds.configured for bounds in self.models.values())

    def resolve(self, model: str | None = None,
                endpoint: SloBounds | None = None) -> SloBounds | None:
        """The bounds for `model` as `endpoint` (its deck.toml override) serves it; None when
        no bound applies (no SLO is measured then)."""
        key = (model, endpoint)
        if key not in self._resolved:
            bounds = self.defaults.under(self.models.get(model) if model else None).under(endpoint)
            self._resolved[key] = bounds if bounds.configured else None
        return self._resolved[key]


def model_of(version_ref: str) -> str:
    """The model name of a `name@version` reference (the whole text when it has no '@')."""
    return version_ref.rpartition("@")[0] or version_ref
