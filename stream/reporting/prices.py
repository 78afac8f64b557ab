"""Daily closing prices against the sentiment index (pure): the price CSV, daily returns, and the
correlation of each day's index with the returns of the same and the next days (lead-lag).

The price file (docs/contracts.md, "Price CSV"): a header `date,asset,close`, then one row per UTC
day and asset: `2026-10-01,BTC,61234.5`. A bad row is an error naming its line: a report that
silently skipped rows would correlate against a different series than the user thinks.

Honesty about the numbers: daily data gives few pairs (a month is ~30), a Pearson r on fewer than
~20 pairs is mostly noise, and trying four lags is four chances of a spurious one. Every result
carries n, a Fisher-z 95% interval and p-value (n > 3), and the |r| that noise alone reaches one
time in twenty at that n.
"""

from __future__ import annotations

import csv
import io
import math
import re
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import Iterable, Iterator, Mapping, Sequence

from model.csvquotes import quote_fault
from stream.reporting.daily import DAY_S, Report, ticker

HEADER = ("date", "asset", "close")
LAGS = (0, 1, 2, 3)  # days between the index and the return it is compared with
MEANINGFUL_PAIRS = 20  # below this, the report says a correlation means nothing
Z95 = 1.959963984540054  # the standard normal's 97.5% quantile
# A price row starts with its date: a line inside a quoted field that does is a row a stray quote
# swallowed (model/csvquotes.py).
ROW_START = re.compile(r'\s*"?\d{4}-\d{1,2}-\d{1,2}"?\s*,')


class PriceError(ValueError):
    """A price file problem, its message naming the file and line."""


Closes = dict[str, dict[int, float]]  # ticker -> UTC day start -> close


def parse_prices(text: str, source: str = "prices") -> Closes:
    """Closing prices by ticker (upper case, as asset scopes are) and UTC day start."""
    closes: Closes = {}
    first_line: dict[tuple[str, int], int] = {}
    header_seen = False
    for line, cells in _rows(text.lstrip("\ufeff"), source):
        if not any(c.strip() for c in cells):
            continue  # blank lines (a trailing newline, a spreadsheet's empty row)
        if not header_seen:
            if tuple(c.strip().lower() for c in cells) != HEADER:
                raise PriceError(f"{source} line {line}: expected the header {','.join(HEADER)}, got {','.join(cells)[:80]!r}")
            header_seen = True
            continue
        day, asset, close = _parse_row(cells, f"{source} line {line}")
        if (asset, day) in first_line:
            raise PriceError(f"{source} line {line}: a second close for {asset} on {cells[0].strip()} (the first is on line {first_line[asset, day]})")
        first_line[asset, day] = line
        closes.setdefault(asset, {})[day] = close
    if not header_seen:
        raise PriceError(f"{source} line 1: empty file; expected the header {','.join(HEADER)}")
    return closes


def _rows(text: str, source: str) -> Iterator[tuple[int, list[str]]]:
    """The CSV's rows with the line each starts on. A row the csv module cannot read (a field over
    its size limit, a NUL) is a PriceError naming its line, and so is a stray quote that read the
    rows after it into one field (model/csvquotes.py): a close would otherwise go missing unsaid."""
    lines = io.StringIO(text, newline="").readlines()  # as the reader splits them, so a line number indexes this list
    reader = csv.reader(lines)
    first = 1
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise PriceError(f"{source} line {reader.line_num}: {exc}") from None
        if fault := quote_fault(lines, first, reader.line_num, _looks_like_row):
            raise PriceError(f"{source} line {fault.opened}: {fault.reason}")
        yield first, cells
        first = reader.line_num + 1


def _looks_like_row(line: str) -> bool:
    return ROW_START.match(line) is not None


def _parse_row(cells: Sequence[str], where: str) -> tuple[int, str, float]:
    if len(cells) != len(HEADER):
        raise PriceError(f"{where}: expected 3 columns (date,asset,close), got {len(cells)}")
    date_text, asset, close_text = (c.strip() for c in cells)
    try:
        day = int(datetime.strptime(date_text, "%Y-%m-%d").replace(tzinfo=timezone.utc).timestamp())
    except ValueError:
        raise PriceError(f"{where}: date {date_text[:40]!r} is not a YYYY-MM-DD date") from None
    ticker = asset.lstrip("$").upper()
    if not ticker:
        raise PriceError(f"{where}: empty asset")
    try:
        close = float(close_text)
    except ValueError:
        raise PriceError(f"{where}: close {close_text[:40]!r} is not a number") from None
    if not math.isfinite(close) or close <= 0:
        raise PriceError(f"{where}: close {close_text[:40]!r} must be a positive number")
    return day, ticker, close


def daily_returns(closes: Mapping[int, float]) -> dict[int, float]:
    """Day -> close / previous day's close - 1, for days whose previous calendar day has a close
    (crypto trades every day: a gap is missing data, not a weekend, and is not bridged)."""
    return {day: close / closes[day - DAY_S] - 1.0 for day, close in sorted(closes.items()) if day - DAY_S in closes}


def pearson(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    """Pearson's r; None with fewer than 3 pairs or a constant series (r is undefined there)."""
    n = len(xs)
    if n != len(ys):
        raise ValueError("pearson needs equally long series")
    if n < 3:
        return None
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    syy = sum((y - my) ** 2 for y in ys)
    if sxx <= 0 or syy <= 0:
        return None
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys))
    return max(-1.0, min(1.0, sxy / math.sqrt(sxx * syy)))


def _fisher_z(r: float) -> float:
    # r = +-1 exactly would be an infinite z: clamp a hair inside.
    return math.atanh(max(-1 + 1e-12, min(1 - 1e-12, r)))


def fisher_interval(r: float, n: int, z: float = Z95) -> tuple[float, float] | None:
    """The approximate 95% interval for the true correlation (Fisher z, needs n > 3)."""
    if n <= 3:
        return None
    centre, half = _fisher_z(r), z / math.sqrt(n - 3)
    return math.tanh(centre - half), math.tanh(centre + half)


def fisher_p(r: float, n: int) -> float | None:
    """Two-sided p-value of r = 0 (Fisher z, normal approximation; needs n > 3)."""
    if n <= 3:
        return None
    return math.erfc(abs(_fisher_z(r)) * math.sqrt(n - 3) / math.sqrt(2))


def noise_level(n: int) -> float | None:
    """The |r| that uncorrelated series exceed only one time in twenty at n pairs."""
    return math.tanh(Z95 / math.sqrt(n - 3)) if n > 3 else None


@dataclass(frozen=True)
class LagResult:
    lag: int  # the index of day d against the return of day d + lag
    n: int  # day pairs with both an index and a return
    r: float | None
    low: float | None = None  # 95% interval (Fisher z), n > 3
    high: float | None = None
    p: float | None = None

    @property
    def meaningful(self) -> bool:
        return self.r is not None and self.n >= MEANINGFUL_PAIRS


def lag_result(index: Mapping[int, float], returns: Mapping[int, float], lag: int) -> LagResult:
    days = sorted(d for d in index if d + lag * DAY_S in returns)
    xs = [index[d] for d in days]
    ys = [returns[d + lag * DAY_S] for d in days]
    r = pearson(xs, ys)
    if r is None:
        return LagResult(lag, len(days), None)
    interval = fisher_interval(r, len(days))
    low, high = interval if interval else (None, None)
    return LagResult(lag, len(days), r, low, high, fisher_p(r, len(days)))


def lead_lag(index: Mapping[int, float], returns: Mapping[int, float], lags: Iterable[int] = LAGS) -> list[LagResult]:
    """The index against the returns `lag` days later, for each lag (0: the same day)."""
    return [lag_result(index, returns, lag) for lag in lags]


def verdict(result: LagResult) -> str:
    """One honest sentence about a correlation."""
    if result.r is None:
        return f"undefined: {result.n} day pairs" + (" (a series is constant)" if result.n >= 3 else " (need at least 3)")
    if result.n < MEANINGFUL_PAIRS:
        return f"not meaningful: only {result.n} day pairs (need about {MEANINGFUL_PAIRS})"
    noise = noise_level(result.n)
    if noise is not None and abs(result.r) < noise:
        return f"within noise: |r| < {noise:.2f} happens by chance at n = {result.n}"
    return f"beyond noise at n = {result.n} (but several lags were tried; not a trading signal)"


@dataclass(frozen=True)
class AssetPrices:
    ticker: str
    closes: Mapping[int, float]
    returns: Mapping[int, float]
    lags: Sequence[LagResult]


def analyse(index_by_ticker: Mapping[str, Mapping[int, float]], closes: Closes, lags: Iterable[int] = LAGS) -> dict[str, AssetPrices]:
    """Per ticker of the report that has prices: its returns and the lead-lag results. Returns may
    come from days after the report's last day when the file has them (the next days' returns)."""
    lags = tuple(lags)
    out = {}
    for tick, index in index_by_ticker.items():
        if tick not in closes:
            continue
        returns = daily_returns(closes[tick])
        out[tick] = AssetPrices(tick, closes[tick], returns, lead_lag(index, returns, lags))
    return out


def with_prices(report: Report, closes: Closes, lags: Iterable[int] = LAGS) -> Report:
    """The report with each asset's returns and lead-lag results (assets without prices are named
    as such by the renderings)."""
    index = {t: report.index_by_day(s) for s in report.scopes if (t := ticker(s))}
    return replace(report, prices=analyse(index, closes, lags))
