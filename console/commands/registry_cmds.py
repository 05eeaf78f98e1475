"""`modeldeck models import|list|show|alias` and `modeldeck demo`."""

from __future__ import annotations

import argparse
from pathlib import Path

from console import present, present_models
from console.commands.arguments import path_text, text
from console.output import emit, human_bytes, human_count, human_time, table
from engine import actions
from engine.deck import Deck
from engine.registry.records import VersionInfo


def register(verbs: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    models = verbs.add_parser("models", parents=[common], help="the versioned model registry")
    sub = models.add_subparsers(dest="models_verb", metavar="ACTION", required=True,
                                parser_class=type(models))
    importing = sub.add_parser("import", parents=[common],
                               help="import a Hugging Face directory or a .gguf as the next version")
    importing.add_argument("path", type=path_text("PATH"))
    importing.add_argument("--name", required=True, type=text("--name"),
                           help="model name (letters, digits, . _ -)")
    importing.add_argument("--allow-pickle", action="store_true",
                           help="accept pickle checkpoints (.bin/.pt), which can run code when loaded")
    importing.set_defaults(handler=import_command)
    listing = sub.add_parser("list", parents=[common], help="every version of every model")
    listing.add_argument("model", nargs="?", type=text("MODEL"), help="only this model")
    listing.set_defaults(handler=list_command)
    show = sub.add_parser("show", parents=[common], help="one version in full (NAME[@VERSION|@ALIAS])")
    show.add_argument("reference", type=text("REFERENCE"))
    show.set_defaults(handler=show_command)
    alias = sub.add_parser("alias", parents=[common], help="point ALIAS at NAME@VERSION")
    alias.add_argument("reference", type=text("REFERENCE"))
    alias.add_argument("alias", type=text("ALIAS"))
    alias.set_defaults(handler=alias_command)
    demo = verbs.add_parser("demo", parents=[common],
                            help="fill an empty deck with an offline demo model and deploy it")
    demo.set_defaults(handler=demo_command)


def import_command(args: argparse.Namespace, deck: Deck) -> int:
    version = actions.import_model(deck, actions.ImportRequest(Path(args.path), args.name, args.allow_pickle))
    emit(args.json, "models.import", {"version": version.to_dict()},
         lambda: f"imported {version.ref} ({human_bytes(version.size_bytes)}, "
                 f"{human_count(version.param_count)} parameters)")
    return 0


def list_command(args: argparse.Namespace, deck: Deck) -> int:
    versions = actions.list_models(deck, args.model)
    deployed: dict[tuple[str, int], list[str]] = {}
    for deployment in deck.registry.deployments():
        deployed.setdefault((deployment.model, deployment.version), []).append(deployment.target)
    emit(args.json, "models.list", {"versions": [v.to_dict() for v in versions]},
         lambda: _versions_table(versions, deployed))
    return 0


def _versions_table(versions: list[VersionInfo], deployed: dict) -> str:
    if not versions:
        return "no models yet: `modeldeck models import PATH --name NAME` or `modeldeck demo`"
    rows = [(v.ref, v.produced_by, present.version_ref(v.model, v.parent_version),
             present.architecture(v.architecture), human_count(v.param_count),
             human_bytes(v.size_bytes), v.status, ",".join(v.aliases) or None,
             ",".join(deployed.get((v.model, v.version), [])) or None, human_time(v.created_at))
            for v in versions]
    return table(("VERSION", "FROM", "PARENT", "ARCH", "PARAMS", "SIZE", "STATUS", "ALIASES",
                  "SERVING ON", "CREATED"), rows)


def show_command(args: argparse.Namespace, deck: Deck) -> int:
    details = actions.show_model(deck, args.reference)
    emit(args.json, "models.show", {"model": details.to_dict()}, lambda: _details_text(details))
    return 0


def _details_text(details: actions.ModelDetails) -> str:
    """The version as the console's details view shows it (console.present), as text."""
    return present.sections_text(present_models.model_details(details.to_dict()))


def alias_command(args: argparse.Namespace, deck: Deck) -> int:
    version = actions.alias_model(deck, actions.AliasRequest(args.reference, args.alias))
    emit(args.json, "models.alias", {"version": version.to_dict()},
         lambda: f"{version.model}@{args.alias} -> {version.ref}")
    return 0


def demo_command(args: argparse.Namespace, deck: Deck) -> int:
    result = actions.demo(deck)
    def human() -> str:
        if not result.created or result.version is None:
            return "the deck already has models; demo left it unchanged"
        return (f"demo: imported {result.version.ref} ({result.source}) and pointed local at it; "
                "the server gates it when it starts (`s` in the console, or `modeldeck serve "
                "--detach`)")
    emit(args.json, "demo", result.to_dict(), human)
    return 0
