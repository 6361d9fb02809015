"""Plain-text formatting every renderer shares (terminal, HTML, Markdown): durations, money, sentences.

It sits under the renderers so none of them imports another (HTML and Markdown used to import the rich terminal
module for these)."""

from __future__ import annotations


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s" if m else f"{s}s"


def format_hours(hours: float | None) -> str:
    return "-" if hours is None else format_duration(hours * 3600)


def signer_text(entry: dict) -> str:
    """Who planned or approved: name, key, time and change reference, as far as recorded."""
    text = entry.get("name") or "(unknown)"
    if entry.get("key_id"):
        text += f" (key {entry['key_id']})"
    if entry.get("at"):
        text += f" at {entry['at']}"
    if entry.get("change_ref"):
        text += f" under {entry['change_ref']}"
    return text


def money(amount: float | None, currency: str) -> str:
    if amount is None:
        return "not costed"
    symbol = {"GBP": "£", "EUR": "€", "USD": "$"}.get(currency, currency + " ")
    return f"{symbol}{amount:,.2f}"


def automation_lines(costs: dict) -> list[str]:
    """One sentence per S1SP answering 'is it worth automating?' from the configured unit costs."""
    cur, out = costs["currency"], []
    for a in costs.get("automate_or_manual") or []:
        if not a["devices"]:
            continue
        pays = a["automation_pays_below_fixed_cost"]
        verdict = (
            f"automating it pays if its fixed cost is below {money(pays, cur)}"
            if pays > 0
            else "handling it by hand is cheaper whatever automation's fixed cost"
        )
        out.append(
            f"{a['s1sp']}: {a['devices']} devices to correct; through its API {money(a['automated_variable_cost'], cur)} + fixed, "
            f"by hand {money(a['manual_cost'], cur)}: {verdict}"
        )
    return out
