"""The run's scope and thresholds: one TOML file, every key optional with a documented default."""

from __future__ import annotations

import difflib
import tomllib
from datetime import date, datetime
from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from juno.errors import ConfigError

CohortId = Literal[
    "lapsed_high_value",
    "vip",
    "replenishment_ready",
    "near_vip",
    "discount_risk",
    "first_to_second",
]
# The default precedence: the order of the Literal above.
_DEFAULT_ORDER: tuple[CohortId, ...] = get_args(CohortId)
COHORT_IDS: tuple[str, ...] = _DEFAULT_ORDER
Channel = Literal["email", "sms", "paid_audience", "onsite", "none"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Population(_Strict):
    """Which customers are in scope."""

    exclude_tags: list[str] = Field(
        default=["test", "staff"], description="customers carrying any of these tags are out"
    )
    countries: list[str] = Field(
        default=[], description="keep only customers in these countries (empty: all)"
    )


class Consent(_Strict):
    """Which consent each channel needs."""

    email_requires: list[str] = Field(
        default=["subscribed"], description="email_consent values that allow marketing email"
    )
    sms_requires: list[str] = Field(
        default=["subscribed"], description="sms_consent values that allow marketing SMS"
    )
    primary_channel: Channel = Field(
        default="email", description="the channel outreach actions need by default"
    )
    fallback_channel: Channel = Field(
        default="paid_audience",
        description="what a customer without consent gets instead (onsite, paid_audience, none)",
    )


class Thresholds(_Strict):
    """Every threshold of PRODUCT.md sections 5 and 6."""

    active_days: int = Field(default=120, ge=1, description="last order within this = active")
    vip_share: float = Field(default=0.10, gt=0, lt=1, description="top share by value = VIP")
    vip_min_orders: int = Field(default=2, ge=1, description="orders in window needed for VIP")
    near_vip_share: float = Field(default=0.15, gt=0, lt=1, description="next share = near-VIP")
    min_reorder_pairs: int = Field(
        default=30, ge=1, description="repeat pairs needed to trust a replenishment cycle"
    )
    min_sku_reorder_pairs: int = Field(
        default=30, ge=1, description="repeat pairs needed for a per-SKU cycle"
    )
    max_cycle_days: int = Field(default=180, ge=1, description="longer cycles are not replenishment")
    max_cycle_spread: float = Field(
        default=0.6,
        gt=0,
        description="interquartile range / median of reorder gaps above this = no regular rhythm",
    )
    lead_days: int = Field(default=14, ge=0, description="remind this many days before due")
    overdue_fraction: float = Field(
        default=0.2, ge=0, le=1, description="still due up to this fraction of a cycle late"
    )
    high_value_share: float = Field(
        default=0.20, gt=0, lt=1, description="top share by lifetime value = high value"
    )
    lapse_multiple: float = Field(default=2.0, gt=0, description="lapsed after this x own gap")
    lapse_min_days: int = Field(default=90, ge=1, description="never lapsed before this")
    lost_days: int = Field(default=540, ge=1, description="lapsed longer than this = lost")
    discount_min_orders: int = Field(default=2, ge=1, description="orders in window needed for discount_risk")
    discount_share_min: float = Field(default=0.7, ge=0, le=1, description="share of orders with a discount")
    discount_rate_min: float = Field(default=0.25, ge=0, le=1, description="discount / gross merchandise")
    first_order_min_days: int = Field(
        default=7, ge=0, description="first_to_second: at least this many days since the order"
    )
    second_order_window: int | None = Field(
        default=None,
        description=(
            "first_to_second: at most this many days"
            " (default: the store's p75 first-to-second gap, 90 when unknown)"
        ),
    )
    support_window_days: int = Field(default=30, ge=0, description="recent ticket window")
    cooldown_days: int = Field(default=7, ge=0, description="ordered within this = hold")
    min_cohort_size: int = Field(default=50, ge=1, description="smaller cohorts are thin")
    margin_coverage_min: float = Field(
        default=0.05,
        ge=0,
        le=1,
        description="margin incomplete when cost is missing for more than this share of revenue",
    )
    min_history_days: int = Field(default=180, ge=1, description="history lapse and replenishment need")


class Duplicates(_Strict):
    """How duplicate customer records are found and handled."""

    merge: bool = Field(default=False, description="compute signals on the merged identity")
    ignore_plus_tags: bool = Field(default=True, description="jane+shop@x = jane@x")
    ignore_gmail_dots: bool = Field(default=True, description="j.ane@gmail.com = jane@gmail.com")
    default_phone_country: str = Field(default="1", description="country code for bare numbers")


class Narrative(_Strict):
    """How the brief's words are drafted."""

    mode: Literal["auto", "model", "template"] = Field(
        default="auto", description="auto: the model when OPENAI_API_KEY is set, else the template"
    )
    model: str = Field(default="gpt-4o-mini", description="model name (JUNO_MODEL overrides)")
    temperature: float = Field(default=0.2, ge=0, le=2, description="sampling temperature, set explicitly")
    timeout_s: float = Field(default=60.0, gt=0, description="per-call timeout")
    deadline_s: float = Field(default=180.0, gt=0, description="overall deadline for drafting")
    max_attempts: int = Field(default=4, ge=1, description="attempts on transient errors")


class Config(_Strict):
    """The whole run configuration (juno.toml)."""

    as_of: date | datetime | None = Field(
        default=None, description="evaluation date (default: the latest order in the data)"
    )
    window_days: int = Field(default=365, ge=1, description="review window")
    value: Literal["revenue", "margin"] = Field(
        default="revenue", description="value definition: net revenue or margin"
    )
    cohorts: list[CohortId] = Field(
        default_factory=lambda: list(_DEFAULT_ORDER), description="which cohorts to build"
    )
    precedence: list[CohortId] = Field(
        default_factory=lambda: list(_DEFAULT_ORDER),
        description="primary cohort when a customer meets several",
    )
    currency: str | None = Field(default=None, description="expected currency (default: the one in the data)")
    population: Population = Population()
    consent: Consent = Consent()
    thresholds: Thresholds = Thresholds()
    duplicates: Duplicates = Duplicates()
    narrative: Narrative = Narrative()
    # Column mapping for exports that are neither the generic contract nor Shopify.
    # Kept as plain data here; juno.sources.mapping validates it.
    mapping: dict[str, Any] | None = Field(
        default=None, description="column mapping for other exports (see *Other exports*)"
    )

    @field_validator("precedence")
    @classmethod
    def _precedence_complete(cls, v: list[str]) -> list[str]:
        missing = [c for c in COHORT_IDS if c not in v]
        if missing or len(set(v)) != len(v):
            raise ValueError(
                f"precedence must list each cohort once; missing {missing}"
                if missing
                else "precedence lists a cohort twice"
            )
        return v

    def as_of_datetime(self) -> datetime | None:
        if self.as_of is None:
            return None
        if isinstance(self.as_of, datetime):
            return self.as_of.replace(tzinfo=None)
        # A bare date means the end of that day: orders placed on it count.
        return datetime(self.as_of.year, self.as_of.month, self.as_of.day, 23, 59, 59)


def _known_keys(model: type[BaseModel], prefix: str = "") -> dict[str, type[BaseModel] | None]:
    keys: dict[str, type[BaseModel] | None] = {}
    for name, info in model.model_fields.items():
        ann = info.annotation
        sub = ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None
        keys[prefix + name] = sub
        if sub is not None:
            keys.update(_known_keys(sub, prefix + name + "."))
    return keys


def _check_unknown(data: dict[str, Any], model: type[BaseModel], where: str, prefix: str) -> None:
    fields = model.model_fields
    for key, value in data.items():
        if key not in fields:
            candidates = list(fields)
            # Search the whole tree too: `vip_share` at top level belongs in [thresholds].
            every = list(_known_keys(Config))
            close = difflib.get_close_matches(key, candidates, n=1, cutoff=0.6)
            nested = [k for k in every if k.split(".")[-1] == key]
            if nested:
                hint = f"did you mean `{nested[0]}` (put it under [{nested[0].rsplit('.', 1)[0]}])?"
            elif close:
                hint = f"did you mean `{prefix}{close[0]}`?"
            else:
                hint = "valid keys here: " + ", ".join(candidates)
            raise ConfigError(f"unknown config key `{prefix}{key}`", file=where, hint=hint)
        ann = fields[key].annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel) and isinstance(value, dict):
            _check_unknown(value, ann, where, prefix + key + ".")


def config_from_dict(data: dict[str, Any], where: str = "<config>") -> Config:
    """Validate a config mapping; unknown keys name the closest valid key."""
    _check_unknown(data, Config, where, "")
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        raise ConfigError(
            f"invalid value for config key `{loc}`: {first['msg']}",
            file=where,
            examples=[f"{loc} = {first.get('input')!r}"],
        ) from None


def load_config(path: str | Path | None) -> Config:
    """Read juno.toml; None gives the defaults."""
    if path is None:
        return Config()
    p = Path(path)
    if not p.is_file():
        raise ConfigError("config file not found", file=str(p))
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file is not valid TOML: {exc}", file=str(p)) from None
    return config_from_dict(data, str(p))


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return f'"{v}"'
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return str(v)


def default_config_text() -> str:
    """A commented juno.toml holding every key at its default."""
    out = [
        "# Juno configuration. Every key is optional; the values below are the defaults.",
        "# Docs: README.md, section 'Config reference'.",
        "",
    ]

    def emit(model: type[BaseModel], inst: BaseModel) -> None:
        for name, info in model.model_fields.items():
            ann = info.annotation
            if isinstance(ann, type) and issubclass(ann, BaseModel):
                continue
            if name == "mapping":
                continue
            val = getattr(inst, name)
            desc = info.description or ""
            if val is None:
                out.append(f"# {name} = ...    # {desc}")
            else:
                out.append(f"{name} = {_toml_value(val)}    # {desc}".rstrip())

    emit(Config, Config())
    for name, info in Config.model_fields.items():
        ann = info.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            out.append("")
            out.append(f"[{name}]")
            if ann.__doc__:
                out.append(f"# {ann.__doc__.strip()}")
            emit(ann, getattr(Config(), name))
    out.append("")
    out.append("# [mapping] reads exports that are neither the generic contract nor Shopify;")
    out.append("# see examples/online_retail/juno.toml.")
    return "\n".join(out) + "\n"
