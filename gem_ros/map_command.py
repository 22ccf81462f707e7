"""`gem-ros map ask FILE "query"`: a map of dense features (a node's map_file) asked any words
without ROS running, with the model that made it (its flags, as `gem-ros locate` takes them).

    gem-ros map ask ~/room.gemmap "fire extinguisher" --model ViT-B-16 --pretrained openai
    gem-ros map ask ~/room.gemmap "fire extinguisher" "red mug" --json   (a line per query)

The file says which model, weights, method and frame made it; a model that differs is
refused with the reason (its features would mean nothing). The answer is the node's
`~/ask_map`'s: the same code (gem_ros/feature_map.py), the same background prompts rule.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def made_by(model, map_frame: str, voxel_size: float) -> dict:
    """What a map's features are from: a file made by another of these means nothing here."""
    from .gem.backends import GRAPH_SETTINGS
    from .gem.export import weights_fingerprint

    return {
        'map_frame': map_frame,
        'voxel_size': voxel_size,
        'model': model.name,
        'method': model.method,
        'settings': {k: getattr(model.settings, k) for k in GRAPH_SETTINGS[model.method]},
        'weights': weights_fingerprint(model),
    }


def add_arguments(sub) -> None:
    from .model_args import add_model_arguments

    m = sub.add_parser('map', help='a map of dense features (a node\'s map_file), offline')
    verbs = m.add_subparsers(dest='map_command', metavar='{ask}', required=True)
    a = verbs.add_parser(
        'ask', help='where the map has something, any words, without ROS (as ~/ask_map)'
    )
    a.add_argument('file', type=Path, help="the map file (a node's map_file)")
    a.add_argument(
        'query', nargs='+', help='anything, e.g. "fire extinguisher"; several: asked in turn'
    )
    a.add_argument('--places', type=int, default=5, help='most places (default: %(default)s)')
    a.add_argument('--json', action='store_true', help='one JSON object, for programs')
    add_model_arguments(a)
    a.set_defaults(func=run_ask)


def read_header(path: Path) -> dict:
    """What made the map in `path` (its JSON line); MapFileError for what is not a map."""
    from .feature_map import FILE_SIGNATURE, ForeignMapFile, MapFileError

    with open(path, 'rb') as f:
        if f.read(len(FILE_SIGNATURE)) != FILE_SIGNATURE:
            raise ForeignMapFile(f'{path} is not a gem_ros feature map')
        try:
            return json.loads(f.readline(1 << 16))
        except ValueError as exc:
            raise MapFileError(f'{path}: its header cannot be read: {exc}') from exc


def run_ask(args: argparse.Namespace) -> int:
    from .feature_map import FeatureMap, MapFileError, load_map, query_text
    from .model_args import model_from_args
    from .settings import FrameSettings, from_arguments

    try:
        header = read_header(args.file)
        model = model_from_args(args)
        fmap = FeatureMap(header['voxel_size'], max_voxels=max(1, int(header['voxels'])))
        identity = made_by(model, header['map_frame'], header['voxel_size'])
        load_map(args.file, fmap, identity, args.file.stat().st_size)
    except (OSError, KeyError, TypeError, ValueError) as exc:  # MapFileError is a ValueError
        kind = 'map file' if isinstance(exc, (MapFileError, KeyError, TypeError)) else 'error'
        print(f'gem-ros map ask: {kind}: {exc}', file=sys.stderr)
        return 2
    prompts = from_arguments(FrameSettings, args).background_prompts
    for query in args.query:
        text, rivals = query_text(model, query, prompts)
        places = fmap.ask(text, rivals, model.logit_scale, max(1, args.places))
        _report(args, query, header['map_frame'], places, len(fmap))
    return 0


def _report(args, query: str, frame_id: str, places, voxels: int) -> None:
    rows = [
        {'point': [round(c, 3) for c in p.position], 'score': round(p.score, 4),
         'voxels': p.voxels, 'last_seen': p.last_seen, 'camera': p.camera}
        for p in places
    ]  # fmt: skip
    if args.json:
        print(json.dumps({'query': query, 'found': bool(places), 'frame_id': frame_id,
                          'places': rows}))  # fmt: skip
        return
    if len(args.query) > 1:
        print(f'{query}:')
    if not places:
        print(f'nothing like {query!r} in the map ({voxels} voxels)')
    for i, row in enumerate(rows, 1):
        x, y, z = row['point']
        print(f"{i}. ({x:.2f}, {y:.2f}, {z:.2f}) in {frame_id}: score {row['score']:.2f}, "
              f"{row['voxels']} voxels, camera {row['camera']!r}")  # fmt: skip
