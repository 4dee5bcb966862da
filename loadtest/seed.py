"""Create N links through the API's bulk endpoint and write their codes for the locustfile.

    python loadtest/seed.py --count 10000
    python loadtest/seed.py --count 500 --url http://127.0.0.1:8000 --key lk_... --out codes.txt

The URL and key default to LINKEDGE_URL and LINKEDGE_API_KEY (`make run` writes both to
.linkedge/run.env). Links are created 1000 per request (the API's limit), tagged ``loadtest``; the
codes file lists them one a line in creation order, which the locustfile reads as popularity rank.
Exits 1 if any link could not be created (each failure is printed with its problem detail).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from tqdm import tqdm

MAX_BULK = 1000  # edge/api/inputs.py MAX_BULK_ITEMS
DEFAULT_OUT = Path(__file__).resolve().parent / "reports" / "codes.txt"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=10_000, help="links to create (default 10000)")
    parser.add_argument(
        "--url",
        default=os.environ.get("LINKEDGE_URL", "http://127.0.0.1:8000"),
        help="edge base URL",
    )
    parser.add_argument(
        "--key", default=os.environ.get("LINKEDGE_API_KEY", ""), help="API key with links:write"
    )
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help=f"codes file (default {DEFAULT_OUT})"
    )
    parser.add_argument(
        "--batch", type=int, default=MAX_BULK, help=f"links per request, 1 to {MAX_BULK}"
    )
    parser.add_argument(
        "--target", default="https://example.com/loadtest", help="base of the links' target URLs"
    )
    args = parser.parse_args(argv)
    if not args.key:
        parser.error("no API key: pass --key or set LINKEDGE_API_KEY (source .linkedge/run.env)")
    if args.count < 1 or not 1 <= args.batch <= MAX_BULK:
        parser.error(f"--count must be at least 1 and --batch 1 to {MAX_BULK}")
    return args


def post_bulk(client: httpx.Client, links: list[dict[str, Any]]) -> dict[str, Any]:
    """POST one batch; waits out 429s (Retry-After), exits on any other error status."""
    while True:
        response = client.post("/api/v1/links/bulk", json={"links": links})
        if response.status_code == 429:
            time.sleep(float(response.headers.get("Retry-After", "1")))
            continue
        if response.status_code != 200:
            raise SystemExit(
                f"seed: bulk create answered {response.status_code}: {response.text[:500]}"
            )
        body: dict[str, Any] = response.json()
        return body


def seed(args: argparse.Namespace) -> int:
    run = uuid.uuid4().hex[:8]
    codes: list[str] = []
    failed = 0
    headers = {"Authorization": f"Bearer {args.key}"}
    with (
        httpx.Client(base_url=args.url, headers=headers, timeout=60) as client,
        tqdm(total=args.count, unit="link", desc="seeding") as progress,
    ):
        for start in range(0, args.count, args.batch):
            size = min(args.batch, args.count - start)
            links = [
                {"url": f"{args.target}/{run}/{start + i}", "tags": ["loadtest"]}
                for i in range(size)
            ]
            for result in post_bulk(client, links)["results"]:
                if result["status"] == 201:
                    codes.append(result["link"]["code"])
                else:
                    failed += 1
                    detail = result.get("problem", {}).get("detail", "")
                    tqdm.write(
                        f"seed: link {start + result['index']} failed "
                        f"({result['status']}): {detail}"
                    )
            progress.update(size)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("".join(f"{code}\n" for code in codes))
    print(
        f"seed: {len(codes)} links created, {failed} failed; codes in {args.out}", file=sys.stderr
    )
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    return seed(parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
