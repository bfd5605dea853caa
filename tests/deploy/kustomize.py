"""Rendering ``deploy/kubernetes`` overlays without the ``kustomize`` binary (not installable
here): the small subset of Kustomize those files use, so each rendered resource can be checked
against the Kubernetes schemas.

Supported, with Kustomize's meaning: ``resources`` (files, or directories holding a
``kustomization.yaml``), ``namespace``, ``images`` (``name``, ``newName``, ``newTag``) and
``patches`` given as strategic-merge patch files (``path``), matched by apiVersion, kind and name.
Strategic merge here: mappings merge key by key, ``null`` deletes a key, lists of mappings that
all carry ``name`` merge by name (containers, env, volumes), other lists are replaced. Any other
Kustomization field is refused, so the deploy files cannot drift into what this does not render.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Final

import yaml

__all__ = ["KUSTOMIZATION", "KustomizeSubsetError", "render", "strategic_merge"]

KUSTOMIZATION: Final = "kustomization.yaml"
_FIELDS: Final = frozenset({"apiVersion", "kind", "resources", "namespace", "images", "patches"})
_CLUSTER_SCOPED: Final = frozenset(
    {"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition"}
)
#: Containers live here in each workload kind these files use.
_POD_SPEC_PATHS: Final = {
    "StatefulSet": ("spec", "template", "spec"),
    "Deployment": ("spec", "template", "spec"),
    "DaemonSet": ("spec", "template", "spec"),
    "Pod": ("spec",),
}

Resource = dict[str, Any]


class KustomizeSubsetError(ValueError):
    """The kustomization uses something outside the supported subset, or is inconsistent."""


def _load_all(path: Path) -> list[Resource]:
    docs = [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]
    for doc in docs:
        if not isinstance(doc, dict):
            raise KustomizeSubsetError(f"{path.name}: a document is not a mapping")
    return docs


def _key(resource: Resource) -> tuple[str, str, str]:
    return (resource["apiVersion"], resource["kind"], resource["metadata"]["name"])


def strategic_merge(base: Any, patch: Any) -> Any:
    """``patch`` merged onto ``base`` as described in the module docstring (both unchanged)."""
    if isinstance(base, dict) and isinstance(patch, dict):
        merged = copy.deepcopy(base)
        for key, value in patch.items():
            if value is None:
                merged.pop(key, None)
            elif key in merged:
                merged[key] = strategic_merge(merged[key], value)
            else:
                merged[key] = copy.deepcopy(value)
        return merged
    if isinstance(base, list) and isinstance(patch, list) and _named(base) and _named(patch):
        merged_list = copy.deepcopy(base)
        index = {item["name"]: i for i, item in enumerate(merged_list)}
        for item in patch:
            if item["name"] in index:
                position = index[item["name"]]
                merged_list[position] = strategic_merge(merged_list[position], item)
            else:
                merged_list.append(copy.deepcopy(item))
        return merged_list
    return copy.deepcopy(patch)


def _named(items: list[Any]) -> bool:
    return all(isinstance(item, dict) and "name" in item for item in items)


def _set_images(resource: Resource, images: list[dict[str, str]]) -> None:
    path = _POD_SPEC_PATHS.get(resource["kind"])
    if path is None:
        return
    spec: Any = resource
    for step in path:
        spec = spec[step]
    for container in [*spec.get("containers", []), *spec.get("initContainers", [])]:
        name = container["image"].split("@")[0].rsplit(":", 1)[0]
        for image in images:
            if image["name"] == name:
                tag = image.get("newTag")
                new_name = image.get("newName", name)
                container["image"] = f"{new_name}:{tag}" if tag else new_name


def render(directory: Path) -> list[Resource]:
    """The resources the kustomization in ``directory`` produces, in order.

    Raises :class:`KustomizeSubsetError` for unsupported fields, a patch that matches nothing,
    or two resources of one kind and name.
    """
    spec = yaml.safe_load((directory / KUSTOMIZATION).read_text())
    unknown = set(spec) - _FIELDS
    if unknown:
        raise KustomizeSubsetError(f"{directory.name}: unsupported fields {sorted(unknown)}")
    resources: list[Resource] = []
    for entry in spec.get("resources", []):
        path = (directory / entry).resolve()
        resources.extend(render(path) if path.is_dir() else _load_all(path))
    keys = [_key(resource) for resource in resources]
    if len(set(keys)) != len(keys):
        raise KustomizeSubsetError(f"{directory.name}: a resource is listed twice")
    for patch_entry in spec.get("patches", []):
        if set(patch_entry) != {"path"}:
            raise KustomizeSubsetError("only strategic-merge patches given by path are supported")
        for patch in _load_all(directory / patch_entry["path"]):
            matches = [i for i, resource in enumerate(resources) if _key(resource) == _key(patch)]
            if len(matches) != 1:
                raise KustomizeSubsetError(f"patch {_key(patch)} matches no resource")
            resources[matches[0]] = strategic_merge(resources[matches[0]], patch)
    for resource in resources:
        if "namespace" in spec and resource["kind"] not in _CLUSTER_SCOPED:
            resource["metadata"]["namespace"] = spec["namespace"]
        _set_images(resource, spec.get("images", []))
    return resources
