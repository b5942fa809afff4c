"""Where the book's repository lives (generated from _config.yml by scripts/sync_repo_url.py)."""

REPO_URL = "https://github.com/haformer-book/haformer"
BRANCH = "main"
