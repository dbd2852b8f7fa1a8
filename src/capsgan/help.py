"""``python src/train.py --help``: the config groups and every option of each, with the
one-line description its YAML file carries (a ``# description: ...`` comment), read from
``conf/`` when the help is shown, so the help lists exactly the presets there are.

The help template (``hydra.help.template`` in ``conf/train.yaml``) calls the
``capsgan.config_groups`` resolver, which asks Hydra's config loader for the groups and
their options (the project's and the installed plugins': ``hydra/launcher=joblib``...).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

DESCRIPTION = re.compile(r"^#\s*description:\s*(.+?)\s*$", re.MULTILINE)
HYDRA_GROUPS = ("hydra/launcher",)  # of Hydra's own groups, the ones a user picks here
MISSING = "(no description: add a `# description: ...` line to its YAML file)"


def config_groups(choices: Any = None) -> str:
    """Every config group of the running app with its options, one line each with its
    description, the default marked (``choices``: ``hydra.runtime.choices``)."""
    from hydra.core.global_hydra import GlobalHydra

    loader = GlobalHydra.instance().config_loader()
    mains = [Path(e.path) for e in loader.get_search_path().get_path() if e.provider == "main"]
    groups = [g for g in loader.list_groups("") if g != "hydra"]
    lines = []
    for group in sorted(groups) + list(HYDRA_GROUPS):
        options = sorted(loader.get_group_options(group))
        default = (choices or {}).get(group, "")
        lines.append(f"  {group}=  " + (f"(default: {default})" if default else "(optional)"))
        width = max(len(o) for o in options) + 2
        for option in options:
            found = next((f for m in mains if (f := m / group / f"{option}.yaml").is_file()), None)
            text = "Hydra's own or an installed plugin's"
            if found:
                described = DESCRIPTION.search(found.read_text(encoding="utf-8"))
                text = described[1] if described else MISSING
            lines.append(f"    {option:<{width}}{text}")
    return "\n".join(lines).replace("$", "$$")  # the template is a string.Template
