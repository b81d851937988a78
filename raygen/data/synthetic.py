"""The embedded default catalog: industrial/scientific products and users whose behaviour follows item text.

Items are built from a small vocabulary: category -> subcategories (product nouns, attributes,
a use sentence, complementary subcategories) and category-level brands and feature sentences.
Titles and descriptions therefore carry the category, subcategory, brand, attributes and
what the product goes with.

Every item has ``n_successors`` likely next items (its successors): products of the same
subcategory or of a complementary one (printer -> filament, drill -> drill bits), preferring the
same brand, fixed once per catalog; the description's "Works with ..." sentence names the
subcategory of its first complementary successor.

Users draw from a mixture of latent tastes (each a distribution over categories plus a
favourite brand per category). A sequence starts from the taste; each next item, with
probability ``transition_prob``, is one of the previous item's not-yet-bought successors
(successor k with weight ``successor_decay**k``), otherwise a fresh popularity-weighted draw
from the tastes. So item-to-item transitions carry most of the signal (on the default, a
first-order Markov model scores several times the NDCG@10 of most-popular; see
benchmarks/synthetic_signal.py), popularity keeps a lognormal skew (``popularity_sigma``), and
text similarity (same subcategory/category/brand, "works with" mentions) predicts the next item
far better than chance. Splits are leave-one-out per user. Everything is deterministic for ``cfg.seed``.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pyarrow as pa

from raygen.data.common import loo_samples, make_report
from raygen.data.config import DataConfig, SyntheticConfig
from raygen.data.schema import SkipLog, items_table, samples_table

# attribute -> (label used in descriptions, values used in titles)
ATTRS = {
    "voltage": ("Voltage", ["12V", "18V", "20V Max", "40V"]),
    "chuck": ("Chuck", ["3/8-Inch Chuck", "1/2-Inch Chuck"]),
    "capacity": ("Capacity", ["2.0Ah", "4.0Ah", "5.0Ah"]),
    "blade": ("Blade size", ["6-1/2-Inch", "7-1/4-Inch", "10-Inch"]),
    "pieces": ("Pieces", ["10-Piece", "21-Piece", "29-Piece", "100-Piece"]),
    "bit_material": ("Material", ["Titanium Coated", "Cobalt", "Black Oxide", "Carbide Tipped"]),
    "screw_size": ("Size", ["#8 x 1-1/4 in", "#9 x 2-1/2 in", "#10 x 3 in"]),
    "metal": ("Material", ["Stainless Steel", "Zinc Plated Steel", "Brass", "Grade 8 Steel"]),
    "thread": ("Thread", ["1/4-20", "5/16-18", "3/8-16", "M6 x 1.0"]),
    "size_in": ("Size", ["1/4 in", "3/8 in", "1/2 in"]),
    "pack": ("Pack", ["Pack of 10", "Pack of 50", "Pack of 100", "Pack of 500"]),
    "volume": ("Volume", ["50 ml", "250 ml", "500 ml", "1000 ml"]),
    "micro": ("Volume", ["1 ml", "3 ml", "10-100 ul", "100-1000 ul"]),
    "tube": ("Size", ["13 x 100 mm", "16 x 150 mm", "50 ml"]),
    "plate": ("Plate", ["5 x 5 in", "7 x 7 in", "235 x 235 mm", "310 x 310 mm"]),
    "ac": ("Power", ["110V", "220V"]),
    "weight": ("Net weight", ["2 g", "4 g", "20 g"]),
    "oz": ("Size", ["1 oz", "8 oz", "10.1 oz"]),
    "cure": ("Set time", ["5 Minute", "30 Minute", "Overnight"]),
    "color": ("Color", ["Black", "White", "Clear", "Red", "Blue", "Gray"]),
    "tape_w": ("Width", ["1/2 in", "1 in", "1.88 in"]),
    "lens": ("Lens", ["Clear Lens", "Smoke Lens", "Amber Lens"]),
    "glove": ("Size", ["Medium", "Large", "X-Large"]),
    "nrr": ("Noise reduction", ["NRR 25 dB", "NRR 29 dB", "NRR 32 dB"]),
    "awg": ("Gauge", ["12 AWG", "14 AWG", "18 AWG", "22 AWG"]),
    "length": ("Length", ["25 ft", "50 ft", "100 ft"]),
    "awg_range": ("Wire range", ["10-22 AWG", "12-18 AWG"]),
    "pipe": ("Pipe size", ["1/2 in", "3/4 in", "1 in"]),
    "build": ("Build volume", ["220 x 220 x 250 mm", "256 x 256 x 256 mm", "300 x 300 x 400 mm"]),
    "diameter": ("Diameter", ["1.75 mm", "2.85 mm"]),
    "spool": ("Spool", ["1 kg Spool", "0.5 kg Spool"]),
    "nozzle": ("Nozzle", ["0.2 mm", "0.4 mm", "0.6 mm"]),
    "drive": ("Drive", ["1/4-Inch Drive", "3/8-Inch Drive", "1/2-Inch Drive"]),
    "grit": ("Grit", ["80 Grit", "120 Grit", "220 Grit", "Assorted Grits"]),
    "teeth": ("Teeth", ["24 Tooth", "40 Tooth", "60 Tooth"]),
    "range": ("Range", ["0-6 in", "0-12 in", "0-150 mm"]),
    "tape_len": ("Length", ["16 ft", "25 ft", "35 ft"]),
    "bins": ("Bins", ["12 Bins", "24 Bins", "44 Bins"]),
}

# category -> (brands, feature sentences, {subcategory: (nouns, attrs, use phrase, complements)})
CATALOG = {
    "Power Tools": (["DeWalt", "Makita", "Bosch", "Milwaukee", "Ryobi"], [
        "Brushless motor delivers longer runtime.", "Ergonomic rubber grip reduces fatigue.",
        "Built-in LED light illuminates dark work areas."], {
        "Cordless Drills": (["Cordless Drill/Driver Kit", "Hammer Drill", "Compact Drill/Driver"], ["voltage", "chuck"],
                            "drills holes and drives screws in wood, metal and masonry", ["Drill Bits", "Batteries & Chargers"]),
        "Drill Bits": (["Drill Bit Set", "Step Drill Bit", "Masonry Drill Bits"], ["pieces", "bit_material"],
                       "fits standard drill chucks for clean holes in wood, metal and masonry", ["Cordless Drills", "Anchors"]),
        "Batteries & Chargers": (["Lithium-Ion Battery Pack", "Rapid Charger", "Battery Starter Kit"], ["voltage", "capacity"],
                                 "powers cordless drills and saws of the same voltage platform", ["Cordless Drills", "Circular Saws"]),
        "Circular Saws": (["Circular Saw", "Cordless Circular Saw", "Worm Drive Saw"], ["blade", "voltage"],
                          "makes straight rip and cross cuts in lumber and plywood", ["Saw Blades", "Batteries & Chargers"]),
    }),
    "Fasteners": (["Hillman", "Simpson Strong-Tie", "Grip-Rite", "Bolt Dropper", "Everbilt"], [
        "Corrosion resistant for indoor and outdoor use.", "Sorted in a reusable storage box.",
        "Meets ASTM and SAE specifications."], {
        "Wood Screws": (["Deck Screws", "Wood Screws", "Drywall Screws"], ["screw_size", "pack"],
                        "holds framing, decking and cabinetry together", ["Cordless Drills", "Screwdrivers"]),
        "Bolts & Nuts": (["Hex Bolts", "Nylon Lock Nuts", "Carriage Bolts"], ["thread", "metal", "pack"],
                         "secures machinery, brackets and structural joints", ["Washers", "Wrenches"]),
        "Washers": (["Flat Washers", "Fender Washers", "Split Lock Washers"], ["size_in", "metal", "pack"],
                    "spreads the load of bolts and screws and prevents loosening", ["Bolts & Nuts"]),
        "Anchors": (["Drywall Anchor Kit", "Concrete Wedge Anchors", "Toggle Bolts"], ["size_in", "pack"],
                    "mounts shelves and fixtures to drywall, brick and concrete", ["Wood Screws", "Drill Bits"]),
    }),
    "Lab Supplies": (["Fisherbrand", "Corning", "Eisco", "Karter Scientific", "Thermo Scientific"], [
        "Autoclavable and chemically resistant.", "Graduated markings for accurate readings.",
        "Suitable for school, research and clinical labs."], {
        "Beakers & Flasks": (["Borosilicate Glass Beaker Set", "Erlenmeyer Flask", "Volumetric Flask"], ["volume", "pack"],
                             "for mixing, heating and measuring liquids in the laboratory", ["Pipettes", "Hot Plates & Stirrers"]),
        "Pipettes": (["Transfer Pipettes", "Adjustable Micropipette", "Pipette Tips"], ["micro", "pack"],
                     "for accurate transfer of small liquid volumes", ["Test Tubes", "Beakers & Flasks"]),
        "Test Tubes": (["Glass Test Tubes with Caps", "Test Tube Rack", "Centrifuge Tubes"], ["tube", "pack"],
                       "for holding, mixing and centrifuging samples", ["Pipettes"]),
        "Hot Plates & Stirrers": (["Magnetic Stirrer Hot Plate", "Digital Hotplate", "Stir Bar Set"], ["plate", "ac"],
                                  "heats and stirs solutions at precise temperatures", ["Beakers & Flasks"]),
    }),
    "Adhesives & Sealants": (["Loctite", "Gorilla", "3M", "J-B Weld", "DAP"], [
        "Waterproof once fully cured.", "No-drip formula for vertical surfaces.", "Dries clear and sandable."], {
        "Super Glue": (["Super Glue Gel", "Instant Adhesive", "Cyanoacrylate Glue"], ["weight", "pack"],
                       "bonds plastic, metal, rubber and ceramic in seconds", ["Epoxy"]),
        "Epoxy": (["Two-Part Epoxy", "Quick Set Epoxy Syringe", "Steel Reinforced Epoxy"], ["oz", "cure"],
                  "forms a permanent gap-filling bond on metal, wood and concrete", ["Super Glue", "Sandpaper"]),
        "Silicone Sealant": (["100% Silicone Sealant", "Kitchen and Bath Caulk", "Window and Door Sealant"], ["oz", "color"],
                             "seals joints around tubs, sinks and windows against water", ["Tapes", "Pipe Fittings"]),
        "Tapes": (["Heavy Duty Duct Tape", "Double-Sided Mounting Tape", "Painter's Tape"], ["tape_w", "color"],
                  "for quick repairs, mounting and clean masking", ["Silicone Sealant"]),
    }),
    "Safety Gear": (["3M", "Honeywell", "MCR Safety", "Ansell", "Uvex"], [
        "Lightweight for all-day comfort.", "Meets ANSI and OSHA requirements.", "Latex free."], {
        "Safety Glasses": (["Safety Glasses", "Anti-Fog Safety Goggles", "Over-the-Glasses Safety Eyewear"], ["lens", "pack"],
                           "protects eyes from flying debris, dust and splashes", ["Work Gloves", "Hearing Protection"]),
        "Work Gloves": (["Cut Resistant Work Gloves", "Nitrile Disposable Gloves", "Leather Work Gloves"], ["glove", "pack"],
                        "protects hands from cuts, abrasion and chemicals", ["Safety Glasses"]),
        "Respirators": (["N95 Particulate Respirator", "Half Face Respirator", "Disposable Dust Mask"], ["pack"],
                        "filters dust, fumes and particles while sanding, painting or grinding", ["Safety Glasses", "Sandpaper"]),
        "Hearing Protection": (["Foam Ear Plugs", "Safety Earmuffs", "Banded Ear Plugs"], ["nrr", "pack"],
                               "reduces noise from power tools and machinery", ["Safety Glasses"]),
    }),
    "Electrical": (["Klein Tools", "Leviton", "Gardner Bender", "Southwire", "Ideal"], [
        "UL listed for safety.", "Rated for 600 volts.", "Color coded for easy identification."], {
        "Wire & Cable": (["Stranded Copper Wire", "Building Wire", "Speaker Wire"], ["awg", "length", "color"],
                         "carries current for home wiring, automotive and DIY projects", ["Wire Connectors", "Wire Strippers"]),
        "Wire Connectors": (["Wire Nut Assortment", "Heat Shrink Butt Connectors", "Lever Wire Connectors"], ["awg_range", "pack"],
                            "joins and insulates wire splices", ["Wire & Cable", "Wire Strippers"]),
        "Wire Strippers": (["Wire Stripper and Cutter", "Crimping Tool", "Self-Adjusting Wire Stripper"], ["awg_range"],
                           "strips insulation and crimps terminals cleanly", ["Wire Connectors"]),
        "Multimeters": (["Digital Multimeter", "Clamp Meter", "Non-Contact Voltage Tester"], ["ac"],
                        "measures voltage, current and resistance to troubleshoot circuits", ["Wire & Cable"]),
    }),
    "Plumbing": (["SharkBite", "Oatey", "Fluidmaster", "Everbilt", "Apollo"], [
        "Lead free and certified for drinking water.", "Installs without special tools.", "Rated to 200 psi."], {
        "Pipe Fittings": (["Push-to-Connect Coupling", "Brass Elbow Fitting", "PEX Tee Fitting"], ["pipe", "pack"],
                          "connects copper, PEX and CPVC pipe without soldering", ["Thread Sealants", "PEX Tubing"]),
        "Thread Sealants": (["PTFE Thread Seal Tape", "Pipe Thread Compound", "Gas Line Thread Tape"], ["tape_w", "pack"],
                            "seals threaded pipe joints against leaks", ["Pipe Fittings"]),
        "PEX Tubing": (["PEX Tubing Coil", "Oxygen Barrier PEX Pipe", "Flexible Water Supply Line"], ["pipe", "length", "color"],
                       "carries hot and cold potable water", ["Pipe Fittings"]),
        "Toilet Repair": (["Toilet Fill Valve", "Toilet Flapper", "Wax Ring Kit"], ["pack"],
                          "fixes running toilets and base leaks", ["Thread Sealants"]),
    }),
    "3D Printing": (["Hatchbox", "Creality", "Prusa", "Overture", "eSUN"], [
        "Vacuum sealed with desiccant to stay dry.", "Tested for consistent quality.", "Open source friendly design."], {
        "3D Printers": (["FDM 3D Printer", "Resin 3D Printer", "Enclosed 3D Printer"], ["build"],
                        "prints detailed parts from PLA, PETG and ABS filament", ["Filament", "Nozzles & Parts", "Build Surfaces"]),
        "Filament": (["PLA Filament", "PETG Filament", "ABS Filament", "TPU Flexible Filament"], ["diameter", "color", "spool"],
                     "dimensionally accurate filament for most FDM 3D printers", ["Nozzles & Parts", "3D Printers"]),
        "Nozzles & Parts": (["Brass Nozzle Set", "Hardened Steel Nozzle", "Extruder Upgrade Kit"], ["nozzle", "pack"],
                            "replacement parts for FDM 3D printer hotends and extruders", ["Filament"]),
        "Build Surfaces": (["PEI Spring Steel Build Plate", "Glass Printer Bed", "Magnetic Build Surface"], ["plate"],
                           "improves first-layer adhesion and part removal on 3D printers", ["Filament"]),
    }),
    "Hand Tools": (["Stanley", "Irwin", "Craftsman", "TEKTON", "Channellock"], [
        "Chrome vanadium steel for durability.", "Cushion grip handle.", "Lifetime warranty."], {
        "Wrenches": (["Combination Wrench Set", "Adjustable Wrench", "Socket Set"], ["drive", "pieces"],
                     "tightens and loosens nuts and bolts", ["Bolts & Nuts"]),
        "Screwdrivers": (["Screwdriver Set", "Ratcheting Screwdriver", "Precision Screwdriver Kit"], ["pieces"],
                         "drives Phillips, slotted and Torx screws", ["Wood Screws"]),
        "Pliers": (["Needle Nose Pliers", "Tongue and Groove Pliers", "Locking Pliers"], ["pieces"],
                   "grips, bends and cuts wire and small parts", ["Wire & Cable"]),
        "Hammers": (["Claw Hammer", "Dead Blow Hammer", "Ball Peen Hammer"], ["weight"],
                    "drives nails and shapes metal", ["Wood Screws"]),
    }),
    "Abrasives": (["Norton", "Diablo", "Dremel", "Gator", "Mirka"], [
        "Long lasting abrasive grain.", "Anti-clog coating.", "Fits most standard tools."], {
        "Sandpaper": (["Sanding Discs", "Sandpaper Sheets", "Sanding Sponges"], ["grit", "pack"],
                      "smooths wood, paint and metal before finishing", ["Respirators", "Epoxy"]),
        "Saw Blades": (["Circular Saw Blade", "Framing Blade", "Finishing Blade"], ["blade", "teeth"],
                       "replacement blade for circular and miter saws", ["Circular Saws"]),
        "Cutting Wheels": (["Cut-Off Wheels", "Grinding Wheel", "Flap Disc"], ["size_in", "pack"],
                           "cuts and grinds metal on angle grinders", ["Safety Glasses"]),
        "Rotary Tool Accessories": (["Rotary Tool Accessory Kit", "Polishing Wheels", "Engraving Bits"], ["pieces"],
                                    "for cutting, sanding and polishing with rotary tools", ["Sandpaper"]),
    }),
    "Measuring & Inspection": (["Starrett", "Mitutoyo", "Neiko", "Johnson Level", "Etekcity"], [
        "Calibrated for accuracy.", "Large easy-to-read display.", "Includes a protective case."], {
        "Calipers": (["Digital Caliper", "Dial Caliper", "Vernier Caliper"], ["range"],
                     "measures inside, outside and depth dimensions precisely", ["Nozzles & Parts"]),
        "Tape Measures": (["Tape Measure", "Laser Distance Meter", "Folding Ruler"], ["tape_len"],
                          "measures lengths for layout and cutting", ["Levels"]),
        "Levels": (["Torpedo Level", "Box Beam Level", "Laser Level"], ["size_in"],
                   "checks level, plumb and square", ["Tape Measures"]),
        "Thermometers": (["Infrared Thermometer", "Probe Thermometer", "Lab Thermometer"], ["range"],
                         "reads surface and liquid temperatures", ["Hot Plates & Stirrers"]),
    }),
    "Storage & Organization": (["Akro-Mils", "Plano", "Husky", "Keter", "Sterilite"], [
        "Impact resistant polypropylene.", "Stackable to save space.", "Clear lids show contents."], {
        "Parts Bins": (["Small Parts Organizer", "Stackable Storage Bins", "Hardware Drawer Cabinet"], ["bins"],
                       "keeps screws, nuts and small parts sorted", ["Wood Screws", "Washers"]),
        "Tool Boxes": (["Rolling Tool Box", "Portable Tool Box", "Tool Bag"], ["color"],
                       "carries and protects hand and power tools", ["Wrenches", "Screwdrivers"]),
        "Shelving": (["Steel Shelving Unit", "Wall Mounted Shelf", "Workbench"], ["size_in"],
                     "stores heavy supplies in garages and shops", ["Anchors"]),
        "Labels": (["Label Maker Tape", "Bin Labels", "Magnetic Labels"], ["tape_w"],
                   "identifies bins, drawers and cables", ["Parts Bins"]),
    }),
}
MAX_CATEGORIES = len(CATALOG)


@dataclass
class _Catalog:
    """Generated items plus the structure the behaviour model needs (arrays indexed by item id)."""

    rows: list[dict]
    cat_of: np.ndarray  # category index
    sub_of: np.ndarray  # global subcategory index
    brand_of: np.ndarray  # global brand index (brand names are shared across categories)
    cat_brands: list[list[int]]  # global brand indices available in each category
    complements: list[list[int]]  # complementary subcategories of each subcategory
    popularity: list[float]  # relative appeal of each item (lognormal)
    successors: list[list[int]]  # each item's likely next items, most likely first


def _successors(cfg: SyntheticConfig, rng: np.random.Generator, sub_of: np.ndarray, cat_of: np.ndarray,
                brand_of: np.ndarray, complements: list[list[int]], popularity: np.ndarray) -> list[list[int]]:
    """``cfg.n_successors`` distinct next items per item: each from the item's own subcategory
    (with probability 1/2) or from one of its complementary subcategories, preferring the same
    brand, popularity-weighted. Falls back to the category, then to the whole catalog, in tiny
    catalogs."""
    n = len(sub_of)
    ids = np.arange(n)
    out = []
    for i in range(n):
        own = ids[(sub_of == sub_of[i]) & (ids != i)]
        comp = [ids[sub_of == s] for s in complements[sub_of[i]]]
        comp = [c for c in comp if len(c)]
        fallback = [ids[(cat_of == cat_of[i]) & (ids != i)], ids[ids != i]]
        chosen: list[int] = []
        for _ in range(min(cfg.n_successors, n - 1)):
            pools = [own, comp[rng.integers(len(comp))]] if comp else [own]
            order = [pools[rng.integers(len(pools))]] + pools + fallback
            for pool in order:
                cand = pool[~np.isin(pool, chosen)]
                if len(cand):
                    break
            same_brand = cand[brand_of[cand] == brand_of[i]]
            if len(same_brand) and rng.random() < 0.5:
                cand = same_brand
            w = popularity[cand]
            chosen.append(int(rng.choice(cand, p=w / w.sum())))
        out.append(chosen)
    return out


def _items(cfg: SyntheticConfig, rng: np.random.Generator) -> _Catalog:
    """Spread items evenly over categories and their subcategories, link each to its likely
    successors, and write their text."""
    cats = list(CATALOG)[: cfg.n_categories]
    subs = [(c, s) for c in cats for s in CATALOG[c][2]]
    sub_index = {s: i for i, (_, s) in enumerate(subs)}
    complements = [[sub_index[x] for x in CATALOG[c][2][s][3] if x in sub_index] for c, s in subs]
    brand_index = {b: i for i, b in enumerate(dict.fromkeys(b for c in cats for b in CATALOG[c][0]))}
    # Item k goes to category k % C and to subcategory (k // C) % S of it; ids are then shuffled.
    slots = [(k % len(cats), k // len(cats)) for k in rng.permutation(cfg.n_items)]
    cat_of, sub_of, brand_of = (np.empty(cfg.n_items, np.int64) for _ in range(3))
    parts = []
    for item_id, (ci, m) in enumerate(slots):
        cat = cats[ci]
        brands, features, subcats = CATALOG[cat]
        sub = list(subcats)[m % len(subcats)]
        nouns, attrs, use, comps = subcats[sub]
        brand = brands[rng.integers(len(brands))]
        noun = nouns[rng.integers(len(nouns))]
        values = [(ATTRS[a][0], ATTRS[a][1][rng.integers(len(ATTRS[a][1]))]) for a in attrs]
        model = f"{''.join(ch for ch in brand if ch.isalpha())[:2].upper()}-{rng.integers(100, 9999)}"
        feats = [features[j] for j in sorted(rng.choice(len(features), size=2, replace=False))]
        parts.append((cat, sub, brand, noun, use, values, model, feats))
        cat_of[item_id], sub_of[item_id], brand_of[item_id] = ci, sub_index[sub], brand_index[brand]
    popularity = rng.lognormal(0.0, cfg.popularity_sigma, cfg.n_items)
    successors = _successors(cfg, rng, sub_of, cat_of, brand_of, complements, popularity)
    rows = []
    for item_id, (cat, sub, brand, noun, use, values, model, feats) in enumerate(parts):
        title = f"{brand} {model} {noun}" + "".join(f", {v}" for _, v in values)
        sentences = [f"{noun} by {brand}: {use}.", *feats]
        # "Works with" names the subcategory of the item's likeliest complementary successor.
        comp_subs = [subs[sub_of[j]][1] for j in successors[item_id] if sub_of[j] != sub_of[item_id]]
        if comp_subs:
            sentences.append(f"Works with {comp_subs[0].lower()}.")
        if values:
            sentences.append("Specifications: " + "; ".join(f"{lab}: {v}" for lab, v in values) + ".")
        rows.append({"item_id": item_id, "title": title, "description": " ".join(sentences),
                     "brand": brand, "categories": [cat, sub]})
    cat_brands = [[brand_index[b] for b in CATALOG[c][0]] for c in cats]
    return _Catalog(rows, cat_of, sub_of, brand_of, cat_brands, complements, popularity.tolist(), successors)


def _sequences(cfg: SyntheticConfig, rng: np.random.Generator, cat: _Catalog) -> list[list[int]]:
    """One interaction sequence per user, driven by latent tastes and item-to-item transitions.

    Items already in a user's sequence are not drawn again (n_items >= max_seq_len guarantees
    there is always one left).
    The loop uses Python's ``random`` (seeded from ``rng``): on pools of a few dozen items it
    is much faster than per-draw numpy calls, and this keeps generation well under a second.
    """
    n_cats = cfg.n_categories
    popularity = cat.popularity
    sub_of, cat_of, brand_of = cat.sub_of.tolist(), cat.cat_of.tolist(), cat.brand_of.tolist()
    by_sub = [[i for i in range(cfg.n_items) if sub_of[i] == s] for s in range(len(cat.complements))]
    by_cat = [[i for i in range(cfg.n_items) if cat_of[i] == c] for c in range(n_cats)]
    taste_cats = rng.dirichlet(np.full(n_cats, 0.3), size=cfg.n_tastes).tolist()
    taste_brands = [{int(rng.choice(cat.cat_brands[c])) for c in range(n_cats)} for _ in range(cfg.n_tastes)]
    # Successor k is followed with weight decay**k: the first one is the usual next purchase.
    succ_w = [cfg.successor_decay ** k for k in range(cfg.n_successors)]
    rnd = random.Random(int(rng.integers(2**63)))

    def pick(pool: Sequence[int], seen: set[int], prefer=None, p_prefer: float = 0.0) -> int | None:
        """A popularity-weighted draw of an unseen item of ``pool`` (from ``prefer``-ed ones with p_prefer)."""
        cand = [i for i in pool if i not in seen]
        if not cand:
            return None
        liked = [i for i in cand if prefer(i)] if prefer else []
        if liked and rnd.random() < p_prefer:
            cand = liked
        return rnd.choices(cand, weights=[popularity[i] for i in cand])[0]

    def from_taste(t: int, seen: set[int]) -> int | None:
        c = rnd.choices(range(n_cats), weights=taste_cats[t])[0]
        brands = taste_brands[t]
        got = pick(by_cat[c], seen, lambda i: brand_of[i] in brands, 0.6)
        return got if got is not None else pick(range(cfg.n_items), seen)

    def follow(prev: int, seen: set[int]) -> int | None:
        succ = [(j, w) for j, w in zip(cat.successors[prev], succ_w) if j not in seen]
        if succ:
            return rnd.choices([j for j, _ in succ], weights=[w for _, w in succ])[0]
        # All successors already bought: something else of the same or a complementary subcategory.
        comps = [s for s in cat.complements[sub_of[prev]] if by_sub[s]]
        s = rnd.choice(comps) if comps and rnd.random() < 0.5 else sub_of[prev]
        return pick(by_sub[s], seen, lambda i: brand_of[i] == brand_of[prev], 0.5)

    seqs = []
    for _ in range(cfg.n_users):
        tastes = rnd.sample(range(cfg.n_tastes), min(2, cfg.n_tastes))
        mix = [rnd.random() + 0.1 for _ in tastes]
        n = rnd.randint(cfg.min_seq_len, cfg.max_seq_len)
        seq: list[int] = []
        seen: set[int] = set()
        while len(seq) < n:
            nxt = follow(seq[-1], seen) if seq and rnd.random() < cfg.transition_prob else None
            if nxt is None:
                nxt = from_taste(rnd.choices(tastes, weights=mix)[0], seen)
            seq.append(nxt)
            seen.add(nxt)
        seqs.append(seq)
    return seqs


def load_synthetic(cfg: DataConfig) -> tuple[pa.Table, pa.Table, dict]:
    """The generated catalog and its leave-one-out samples."""
    scfg = cfg.synthetic
    rng = np.random.default_rng(cfg.seed)
    catalog = _items(scfg, rng)
    seqs = _sequences(scfg, rng, catalog)
    width = len(str(scfg.n_users - 1))
    samples = [s for u, seq in enumerate(seqs) for s in loo_samples(f"U{u:0{width}d}", seq, cfg.max_history)]
    items, samples_t = items_table(catalog.rows), samples_table(samples)
    return items, samples_t, make_report("synthetic", items, samples_t, SkipLog(), seed=cfg.seed,
                                         interactions=sum(len(s) for s in seqs))
