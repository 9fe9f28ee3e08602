"""Write the synthetic contacts CSV that the example campaign DAG reads.

Every number is in a range set aside for fiction or tests, so no real person can be rung by a demo
that is pointed at a real account by mistake:

- North America: 555-0100 to 555-0199 in several area codes (reserved for fictional use),
- United Kingdom: 020 7946 0000 to 020 7946 0999 (Ofcom's drama range for London),
- Australia: 0491 570 156 to 0491 570 159 (ACMA's fictional mobile range). phonenumbers maps these
  mobiles to every Australian zone, which shows a calling window checked in several zones at once.

phonenumbers considers all of them valid. On the local PolyAI server a number's last digit picks the
call's outcome, so the file mixes completed, unanswered, busy and failed calls.

Run ``python scripts/generate_campaign_contacts.py`` to rewrite the file; the output is deterministic.
"""

from __future__ import annotations

import argparse
import csv
import random
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUTPUT = ROOT / "airflow_provider_polyai" / "example_dags" / "data" / "campaign_contacts.csv"

#: Area codes, each paired with the 555-01XX block; phonenumbers places each in one zone.
NORTH_AMERICAN_AREA_CODES = ("212", "312", "303", "415")
FIRST_NAMES = ("Alex", "Sam", "Jordan", "Casey", "Robin", "Taylor", "Morgan", "Jamie", "Avery", "Riley")
FIELDS = ("contact_id", "name", "to_number", "time_zone")


def fictional_numbers(count: int, rng: random.Random) -> list[str]:
    """Return ``count`` distinct fictional numbers in E.164 form, mixed across the ranges above."""
    pool = [f"+1{area}55501{suffix:02d}" for area in NORTH_AMERICAN_AREA_CODES for suffix in range(100)]
    pool += [f"+4420794600{suffix:02d}" for suffix in range(100)]
    pool += [f"+6149157015{suffix}" for suffix in range(6, 10)]
    if count > len(pool):
        raise SystemExit(f"--count {count} is more than the {len(pool)} fictional numbers available.")
    return rng.sample(pool, count)


def contacts(count: int, seed: int) -> list[dict[str, str]]:
    """Return ``count`` synthetic contacts; the same seed gives the same list."""
    rng = random.Random(seed)
    rows = []
    for index, number in enumerate(fictional_numbers(count, rng), start=1):
        rows.append(
            {
                "contact_id": f"C{index:04d}",
                "name": f"{rng.choice(FIRST_NAMES)} Test{index:04d}",
                "to_number": number,
                # Left empty: the zone comes from the number unless a contact's row names one.
                "time_zone": "",
            }
        )
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=240, help="contacts to write (default 240)")
    parser.add_argument("--seed", type=int, default=7, help="random seed; the same seed writes the same file")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help=f"CSV path (default {DEFAULT_OUTPUT})")
    args = parser.parse_args(argv)

    args.output.parent.mkdir(parents=True, exist_ok=True)
    with args.output.open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=FIELDS)
        writer.writeheader()
        writer.writerows(contacts(args.count, args.seed))
    print(f"Wrote {args.count} synthetic contacts to {args.output}")


if __name__ == "__main__":
    main()
