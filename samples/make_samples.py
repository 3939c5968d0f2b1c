"""Make the demo data: ~500 companies (CSV), ~5,000 contacts (CSV), ~1,000 deals (Parquet).

Seeded, so the same files come out every time. The data is messy on purpose, the way
real exports are: dates in three formats, yes/no flags spelled five ways, comma-separated
checkbox labels, lifecycle stage labels instead of internal values, thousands
separators, and a few rows that cannot be imported. Every such row has a last name (or
deal name) starting with `INVALID-` so tests can tell them apart independently.

    python samples/make_samples.py [--out samples/]
"""

from __future__ import annotations

import argparse
import csv
import random
from pathlib import Path

import polars as pl

SEED = 20261122
COMPANIES = 500
CONTACTS = 5_000
DEALS = 1_000

INDUSTRIES = ["Accounting", "Banking", "Computer Software", "Retail", "Telecommunications",
              "Financial Services", "Information Technology and Services"]
STAGES = ["Lead", "Subscriber", "Marketing Qualified Lead", "Sales Qualified Lead",
          "Opportunity", "Customer", "lead", "CUSTOMER"]
ROLES = ["Decision Maker", "Champion", "Budget Holder", "End User", "Influencer"]
YES = ["yes", "Yes", "Y", "1", "true"]
NO = ["no", "No", "N", "0", "false"]
FIRST = ["Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Margaret", "Linus",
         "Katherine", "Dennis", "Frances", "Ken", "Radia", "Tim", "Hedy", "Niklaus"]
LAST = ["Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov", "Knuth", "Hamilton",
        "Torvalds", "Johnson", "Ritchie", "Allen", "Thompson", "Perlman", "Berners-Lee"]
MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]


def messy_date(rng: random.Random) -> str:
    year, month, day = rng.randint(1950, 2002), rng.randint(1, 12), rng.randint(1, 28)
    style = rng.randrange(3)
    if style == 0:
        return f"{day:02d}/{month:02d}/{year}"  # DMY, as the job file says
    if style == 1:
        return f"{year}-{month:02d}-{day:02d}"
    return f"{day} {MONTHS[month - 1]} {year}"


def companies(rng: random.Random) -> list[list[str]]:
    return [[f"Company {i:03d} {rng.choice(['Labs', 'Systems', 'Group', 'Inc'])}",
             f"company{i:03d}.example.com", rng.choice(INDUSTRIES),
             f"{rng.randint(5, 50_000):,}", rng.choice(["Paris", "Berlin", "Austin"]),
             rng.choice(YES + NO)] for i in range(COMPANIES)]


def contacts(rng: random.Random) -> list[list[str]]:
    rows = []
    for i in range(CONTACTS):
        first, last = rng.choice(FIRST), rng.choice(LAST)
        company = f"company{rng.randrange(COMPANIES):03d}.example.com"
        if i % 50 == 7:
            company = ""  # some contacts have no company
        if i % 97 == 11:
            company = "no-such-company.example.com"  # reported, never blocks the contact
        roles = ", ".join(rng.sample(ROLES, rng.randint(0, 2)))
        row = [f"{first.lower()}.{last.lower()}.{i}@example.com", first, last, company,
               messy_date(rng), rng.choice(YES + NO), roles, rng.choice(STAGES),
               f"+1 555 {i:07d}", rng.choice(["Engineer", "CTO", "Buyer", ""])]
        if i % 400 == 123:
            row[2], row[4] = "INVALID-date", "31/02/1990"
        elif i % 400 == 321:
            row[2], row[7] = "INVALID-stage", "Prospectish"
        rows.append(row)
    return rows


def deals(rng: random.Random, emails: list[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {k: [] for k in (
        "Deal Name", "Legacy ID", "Amount", "Close Date", "Deal Type", "Buyer Email",
        "Company Domain")}
    for i in range(DEALS):
        name = f"Deal {i:04d}"
        amount = f"{rng.randint(1, 900_000):,}.{rng.randint(0, 99):02d}"
        if i % 250 == 17:
            name, amount = f"INVALID-amount {i}", "lots"
        out["Deal Name"].append(name)
        out["Legacy ID"].append(f"LEG-{i:05d}")
        out["Amount"].append(amount)
        month, day, hour = rng.randint(1, 12), rng.randint(1, 28), rng.randint(0, 23)
        out["Close Date"].append(f"2025-{month:02d}-{day:02d}T{hour:02d}:30:00+02:00")
        out["Deal Type"].append(rng.choice(["New Business", "Existing Business"]))
        out["Buyer Email"].append(rng.choice(emails))
        out["Company Domain"].append(f"company{rng.randrange(COMPANIES):03d}.example.com")
    return out


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    args = parser.parse_args()
    rng = random.Random(SEED)
    args.out.mkdir(parents=True, exist_ok=True)
    write_csv(args.out / "companies.csv",
              ["Company Name", "Website", "Industry", "Employees", "City", "Public"],
              companies(rng))
    people = contacts(rng)
    write_csv(args.out / "contacts.csv",
              ["Email", "First Name", "Last Name", "Company Domain", "Date of birth",
               "Unsubscribed", "Buying Role", "Lifecycle Stage", "Phone Number", "Job Title"],
              people)
    valid_emails = [row[0] for row in people if not row[2].startswith("INVALID-")]
    pl.DataFrame(deals(rng, valid_emails)).write_parquet(args.out / "deals.parquet")


if __name__ == "__main__":
    main()
