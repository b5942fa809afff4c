"""Where the book's repository lives.

Generated from _config.yml by scripts/sync_repo_url.py: edit _config.yml, then run the script.
"""

REPO_URL = "https://github.com/haformer-book/haformer"
BRANCH = "main"
