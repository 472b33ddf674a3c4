"""plugins/ uses the providers' public surface only: no class of ours extends a provider's
operator or sensor (a launcher calls hooks), except where the provider's waiting lives in the
operator itself and nowhere else (EXTENDED, each with why), and nothing reads or sets a
``_``-prefixed attribute of a provider object (their internals change between the provider
versions we lock: ``DockerOperator._normalize_mounts`` exists in docker 4.6.1 only)."""

from __future__ import annotations

import ast
from pathlib import Path

PLUGINS = Path(__file__).resolve().parents[2] / "plugins"
PROVIDERS = "airflow.providers."


def _private(attr: str) -> bool:
    return attr.startswith("_") and not (attr.startswith("__") and attr.endswith("__"))


class _ProviderUse(ast.NodeVisitor):
    """Names bound to provider modules, classes and objects in one module, and what it does with them."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.provider_names: dict[str, str] = {}  # local name -> provider module it came from
        self.objects: set[str] = set()  # variables and self.<attr> holding provider objects
        self.subclasses: list[str] = []
        self.private: list[str] = []
        self._extending_provider = False

    def where(self, node: ast.AST) -> str:
        return f"{self.path.relative_to(PLUGINS.parent)}:{node.lineno}"

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            if alias.name.startswith(PROVIDERS):
                self.provider_names[alias.asname or alias.name.split(".")[0]] = alias.name
        self.generic_visit(node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if (node.module or "").startswith(PROVIDERS):
            for alias in node.names:
                self.provider_names[alias.asname or alias.name] = node.module
        self.generic_visit(node)

    def _root(self, node: ast.AST) -> str | None:
        """``a`` for ``a``, ``a.b`` for ``a.b`` (self.attr), else None."""
        if isinstance(node, ast.Name):
            return node.id
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            return f"{node.value.id}.{node.attr}"
        return None

    def _is_provider(self, node: ast.AST) -> bool:
        if isinstance(node, ast.Call):
            return self._is_provider(node.func)
        root = self._root(node)
        if root is None:
            if isinstance(node, ast.Attribute):
                return self._is_provider(node.value)
            return False
        return root.split(".")[0] in self.provider_names or root in self.objects

    def visit_Assign(self, node: ast.Assign) -> None:
        if self._is_provider(node.value):
            for target in node.targets:
                root = self._root(target)
                if root:
                    self.objects.add(root)
        self.generic_visit(node)

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        provider_bases = [ast.unparse(b) for b in node.bases if self._is_provider(b)]
        module_of = {b: self.provider_names.get(b.split(".")[0], "") for b in provider_bases}
        if any(".operators." in m or ".sensors." in m or m.endswith((".operators", ".sensors"))
               for m in module_of.values()):
            self.subclasses.append(f"{self.where(node)} {node.name}({', '.join(provider_bases)})")
        outer, self._extending_provider = self._extending_provider, bool(provider_bases)
        self.generic_visit(node)
        self._extending_provider = outer

    def visit_Attribute(self, node: ast.Attribute) -> None:
        if _private(node.attr):
            value = node.value
            on_super = isinstance(value, ast.Call) and isinstance(value.func, ast.Name) \
                and value.func.id == "super"
            on_self = isinstance(value, ast.Name) and value.id == "self"
            if ((on_super or on_self) and self._extending_provider) or (
                    not on_self and not on_super and self._is_provider(value)):
                self.private.append(f"{self.where(node)} {ast.unparse(node)}")
        self.generic_visit(node)


def _scan() -> list[_ProviderUse]:
    scans = []
    for path in sorted(PLUGINS.rglob("*.py")):
        use = _ProviderUse(path)
        use.visit(ast.parse(path.read_text(), str(path)))
        scans.append(use)
    return scans


# Provider operators that plugins/ extends, and why no hook could do instead.
EXTENDED = {
    # The human-in-the-loop wait is the operator's own (3.3 parks the task with TaskAwaitingInput,
    # 3.1 defers it to HITLTrigger); the standard provider has no hook for it. The subclass adds
    # only what the stock operator cannot know: the day's rules (issue 42 asks for a subclass).
    "plugins/operators/approval.py AnomalousDayApproval(ApprovalOperator)",
}


def test_no_class_in_plugins_extends_a_provider_operator_or_sensor():
    found = {entry.split(":", 1)[0] + " " + entry.split(" ", 1)[1]
             for use in _scan() for entry in use.subclasses}
    assert found - EXTENDED == set(), "plugins/ extends provider operators or sensors:\n" + "\n".join(
        sorted(found - EXTENDED))
    assert found >= EXTENDED, f"EXTENDED names a subclass that is gone: {sorted(EXTENDED - found)}"


def test_plugins_never_touch_a_private_attribute_of_a_provider_object():
    found = [entry for use in _scan() for entry in use.private]
    assert found == [], "plugins/ reads or sets provider internals:\n" + "\n".join(found)


def test_the_scan_sees_what_it_looks_for(tmp_path):
    """The scan itself: a subclass of a provider operator and its private calls are found."""
    source = tmp_path / "example.py"
    source.write_text(
        "from airflow.providers.docker.operators.docker import DockerOperator\n"
        "from airflow.providers.docker.hooks.docker import DockerHook\n"
        "class C(DockerOperator):\n"
        "    def run(self):\n"
        "        self._normalize_mounts()\n"
        "        return super()._run_image()\n"
        "def f():\n"
        "    hook = DockerHook()\n"
        "    hook._client = None\n"
        "    mine = object()\n"
        "    return mine._fine\n")
    use = _ProviderUse(source)
    use.path = PLUGINS / "example.py"  # reported relative to the repository
    use.visit(ast.parse(source.read_text()))
    assert [s.split(" ", 1)[1] for s in use.subclasses] == ["C(DockerOperator)"]
    assert [p.split(" ", 1)[1] for p in use.private] == [
        "self._normalize_mounts", "super()._run_image", "hook._client"]
