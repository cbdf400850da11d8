import ast
from pathlib import Path

import tasks

FORBIDDEN = {"graphs", "lopt", "editing", "predict"}


def test_package_is_independent():
    for path in Path(tasks.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                roots = {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                roots = {(node.module or "").split(".")[0]}
            else:
                continue
            assert not roots & FORBIDDEN, f"{path.name} imports {roots & FORBIDDEN}"


def test_public_api_is_exported():
    for name in tasks.__all__:
        assert hasattr(tasks, name), name
    assert tasks.get_task("digits_mlp32").name == "digits_mlp32"
    assert isinstance(tasks.get_family("digits_mlp_family"), tasks.TaskFamily)
