"""Machine prices for budgets and costs: a small YAML table shipped with peftbench (prices.yaml) that a
user edits or replaces through PEFTBENCH_PRICES=path."""

import os
from importlib import resources
from pathlib import Path

import yaml

from peftbench.errors import UserError, parse_number, read_file
from peftbench.yaml_files import load_yaml
from peftbench.registry import did_you_mean


PRICES_BYTES = 1 << 20  # a table of machine prices is a page; a larger file is some other file


def price_table() -> dict[str, dict]:
    override = os.environ.get("PEFTBENCH_PRICES")
    path = Path(override) if override else Path(str(resources.files("peftbench") / "prices.yaml"))
    try:
        table = load_yaml(read_file(path, "price table", PRICES_BYTES).decode("utf-8"))
    except (UnicodeDecodeError, yaml.YAMLError) as error:
        raise UserError(f"price table '{path}' (PEFTBENCH_PRICES) cannot be read: {error}; point it at a YAML"
                        " file of NAME: {usd_per_hour: X}") from None
    if not isinstance(table, dict) or not all(isinstance(entry, dict) and "usd_per_hour" in entry
                                              for entry in table.values()):
        raise UserError(f"price table '{path}' must map each name to {{usd_per_hour: NUMBER, source: TEXT}}")
    for name, entry in table.items():
        parse_number(entry["usd_per_hour"], f"usd_per_hour of '{name}' in the price table '{path}'", above=0,
                     fix="give a positive price in USD per hour")
    return table


def usd_per_hour(price: str | float) -> float:
    """A price given as a number (USD per hour) or as the name of a price-table entry."""
    if isinstance(price, (int, float)):
        return parse_number(price, "price", above=0, fix="give a positive price in USD per hour")
    table = price_table()
    if price not in table:
        raise UserError(f"no machine price named '{price}'.{did_you_mean(price, list(table))} Known: "
                        f"{', '.join(sorted(table))}; give USD per hour as a number or add it to the price table")
    return float(table[price]["usd_per_hour"])
