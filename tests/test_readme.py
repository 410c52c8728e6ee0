"""The README's walkthrough pictures are taken by browser journeys, so they stay true."""

import re

from tests.conftest import REPOSITORY


def test_every_picture_in_the_readme_is_one_a_browser_journey_takes():
    readme = (REPOSITORY / "README.md").read_text()
    pictures = set(re.findall(r"\]\(docs/screenshots/([\w-]+)\.png\)", readme))
    taken = {
        name
        for path in (REPOSITORY / "tests").rglob("test_*.py")
        for name in re.findall(r'screenshot\(page, "([\w-]+)", walkthrough=True\)', path.read_text())
    }
    assert pictures and pictures <= taken, sorted(pictures - taken)
