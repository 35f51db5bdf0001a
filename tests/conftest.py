import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))


def pytest_addoption(parser):  # type: ignore[no-untyped-def]
    """`--record-mode=rewrite` re-records the model cassettes (see cassettes/README.md)."""
    parser.addoption(
        "--record-mode",
        default=None,
        choices=["none", "once", "new_episodes", "all", "rewrite"],
        help="vcrpy record mode for the model cassettes (CI replays only)",
    )
