"""Captions the caption panel offers before the user types any (no Qt).

An analyst wants to know what kind of place a tile is: the list holds the user's recent
queries first (what they are looking for), then one plain caption for each kind of scene the
models are trained on (the 21 UCM land-use classes, in our own words), so the ranking of a
selected tile reads as "this looks most like a parking lot, then a freeway" on any scene.
"""
from __future__ import annotations

RECENT_QUERIES = 5   # recent queries put in front of the scene captions

SCENE_CAPTIONS = (
    "green farmland divided into fields",
    "an airplane parked at an airport",
    "a baseball diamond with its infield",
    "a sandy beach along the sea",
    "buildings close together with roofs and streets",
    "dry land covered with low shrubs",
    "many houses in a dense residential area",
    "a dense forest of trees",
    "a freeway with several lanes and cars",
    "a golf course with greens and sand bunkers",
    "a harbor with many boats docked",
    "an intersection of two roads",
    "houses with gardens in a medium residential area",
    "rows of mobile homes in a park",
    "an overpass crossing a road",
    "many cars in a parking lot",
    "a river runs through the area",
    "a runway with markings",
    "a few houses among trees in a sparse residential area",
    "round storage tanks",
    "a tennis court",
)


def default_captions(queries: list[str]) -> list[str]:
    """The user's most recent queries (newest first), then the scene captions."""
    recent = [q for q in reversed(queries) if q and q not in SCENE_CAPTIONS][:RECENT_QUERIES]
    return recent + list(SCENE_CAPTIONS)
