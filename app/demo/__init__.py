"""The demo: a replay upstream answering with real LLMs' recorded answers, and those LLMs
registered from their recorded labels, so the gateway routes for real with no API key. Its data
(`data/`) lives here, out of the serving path."""
from pathlib import Path

DATA_DIR = Path(__file__).parent / "data"
ROUTERBENCH_DIR = DATA_DIR / "routerbench_zs"
