"""Markdown rendering of the shapes-world benchmark report (``shapes_world.report``'s JSON).

Every number in the text comes from the report JSON; the sentences that interpret them are
chosen by the numbers (e.g. whether g beats GAE), so the text stays true when the report is
regenerated.
"""
from __future__ import annotations

import math
from typing import Any

from wwbl.defaults import MIN_PROPOSAL_AREA

SPLIT_TITLES = {"test": "held-out test", "openworld": "open world"}
ROW_TITLES = {
    "random": "random point / random box (baseline)",
    "centre": "centre Gaussian (baseline)",
    "gae": "GAE (Chefer relevancy, last block)",
    "gae_all_blocks": "GAE, all blocks (start_layer 0)",
    "gem": "GEM",
    "clip_surgery": "CLIP Surgery",
    "clip_text_span": "ClipTextSpan",
    "adapting_clip": "Adapting CLIP (own box search)",
    "crop_and_rank": "Crop & Rank (own box)",
    "g": "**g** (shipped, checkpoints/shapes_g)",
}


def pct(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{100 * float(value):.1f}"


def _cell(result: dict[str, Any] | None, key: str) -> str:
    if not result:
        return "–"
    if "error" in result:
        return "error"
    if "missing" in result:
        return "n/a"
    return pct(result.get(key))


def metric_table(rows: dict[str, dict[str, Any]], titles: dict[str, str], keys: tuple[str, ...] = ("pointing", "bbox_acc"),
                 extra_first: tuple[str, ...] = ()) -> list[str]:
    names = {"pointing": "point", "bbox_acc": "box", "acc_iou": "Acc@0.5"}
    header = ["method", *extra_first]
    for split, title in SPLIT_TITLES.items():
        header += [f"{title} {names[k]}" for k in keys]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for label, row in rows.items():
        cells = [titles.get(label, label), *[str(row.get(x, "")) for x in extra_first]]
        for split, title in SPLIT_TITLES.items():
            cells += [_cell(row.get(split), k) for k in keys]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _errors(rows: dict[str, dict[str, Any]]) -> list[str]:
    out = []
    for label, row in rows.items():
        if "error" in row:
            out.append(f"- `{label}` failed: {row['error']}")
        for split, title in SPLIT_TITLES.items():
            if isinstance(row.get(split), dict) and "error" in row[split]:
                out.append(f"- `{label}` on {title} failed: {row[split]['error']}")
            if isinstance(row.get(split), dict) and "missing" in row[split]:
                out.append(f"- `{label}` on {title} not run: {row[split]['missing']}")
    return out


def render_models(report: dict[str, Any]) -> list[str]:
    models = report.get("models", {})
    clip, blip, g = models.get("clip", {}), models.get("blip", {}), models.get("g", {})
    lines = ["## Models", ""]
    if clip:
        lines.append(f"- CLIP `{report['settings']['clip_checkpoint']}` (its own held-out metrics): image→text R@1 "
                     f"{pct(clip.get('i2t_r1'))} %, text→image R@1 {pct(clip.get('t2i_r1'))} %, phrase top-1 "
                     f"{pct(clip.get('phrase_top1'))} %, phrase pair accuracy {pct(clip.get('phrase_pair_acc'))} % "
                     f"({clip.get('train_steps')} steps, {clip.get('train_minutes')} min).")
    if blip:
        lines.append(f"- BLIP `{report['settings']['blip']}`: exact phrase on held-out crops {pct(blip.get('exact_match'))} %, "
                     f"colour {pct(blip.get('colour_acc'))} %, shape {pct(blip.get('shape_acc'))} % "
                     f"({blip.get('train_steps')} steps, {blip.get('train_minutes')} min).")
    if g:
        lines.append(f"- g `{report['settings']['g_checkpoint']}`: {g.get('architecture')} {g.get('kwargs')}, input "
                     f"{g.get('input_size')} px, text prefix '{g.get('text_prefix')}', CLIP {g.get('clip')}."
                     + (f" Trained: {report['settings']['g_provenance']}" if report["settings"].get("g_provenance") else ""))
    else:
        lines.append(f"- g `{report['settings']['g_checkpoint']}`: **absent** — the g rows below are not measured.")
    return lines + [""]


def render_world(report: dict[str, Any]) -> list[str]:
    world = report.get("world", {})
    s = report["settings"]
    lines = ["## The data", ""]
    config = world.get("config", {})
    if config:
        lines.append(f"Shapes world `configs/shapes/world.yaml` (seed {config.get('seed')}, {config.get('image_size')} px "
                     f"scenes, {config.get('min_objects')}–{config.get('max_objects')} objects, radius "
                     f"{config.get('min_radius')}–{config.get('max_radius')} px, share probability "
                     f"{config.get('share_prob')}), written by `python -m shapes_world.writers --config "
                     f"configs/shapes/world.yaml --out {s['data']}` and read back with the real Flickr30k Entities loader "
                     "(`wwbl.readers.load_flickr30k`, default protocol: an entity is kept only if its box "
                     "covers more than 5 % of the image, phrases = all its mentions, heatmaps averaged over them).")
    if world.get("heldout_combos"):
        lines += ["", "Held-out colour-shape combinations (never in g's training captions; the open-world split "
                  "annotates only these): " + ", ".join(f"*{c}*" for c in world["heldout_combos"]) + "."]
    lines += ["", ("| split | images (all) | entities (all) | images evaluated, WSG | entities evaluated, WSG | "
              "images evaluated, WWbL |"), "|---|---|---|---|---|---|"]
    for split, title in SPLIT_TITLES.items():
        w = world.get(split, {})
        lines.append(f"| {title} | {w.get('images_total')} | {w.get('items_total')} | "
                     f"{w.get('images_wsg')} (first {s['limit']}) | {w.get('items_wsg')} | "
                     f"{w.get('images_wwbl')} (first {s['wwbl_limit']}) |")
    return lines + [""]


def render_wsg(report: dict[str, Any]) -> list[str]:
    wsg = report["wsg"]
    lines = ["## Weakly supervised phrase grounding (WSG)", "",
             ("Pointing accuracy (the map's maximum inside the GT box; of a flat top, its centre — "
              "`--pointing-ties centre`, see below) and box accuracy (union of the predicted boxes vs. the "
             "GT, IoU ≥ 0.5; boxes by the paper's rule `wsg_boxes(mode='paper')` unless a method has its own), in %. "
             "Acc@0.5 is the best-scoring box alone (IoU > 0.5, ZSGNet / Adapting CLIP)."), ""]
    lines += metric_table(wsg["rows"], ROW_TITLES, ("pointing", "bbox_acc", "acc_iou"))
    sigma = wsg["centre_sigma"]
    lines += ["", f"The centre baseline's width σ = {sigma:.2f} × side was chosen on the **val** split by box "
              "accuracy among " + ", ".join(f"{k} ({pct(v)} %)" for k, v in wsg["centre_sigma_val_box_acc"].items())
              + ". The random baseline draws a Gaussian at a uniformly random centre with σ uniform in "
              f"[0.05, 0.35] × side (seed {report['settings']['seed']}).", ""]
    lines += ["Not applicable to the shapes CLIP (a ViT): " + "; ".join(
        f"`{name}` ({why})" for name, why in wsg["not_applicable"].items()) + "."]
    teacher = wsg.get("teacher_val", {})
    if teacher:
        ties = next(iter(teacher.values())).get("pointing_ties", "centre")
        lines += ["", f"On the **val** split (used for choices, never test; pointing by the `{ties}` tie rule of g's "
                  "val history): " + "; ".join(
            f"{ROW_TITLES[k]} {pct(v.get('pointing'))} % pointing, {pct(v.get('bbox_acc'))} % box" for k, v in teacher.items())
            + "."]
    lines += _released_ties(wsg)
    lines += _errors(wsg["rows"])
    return lines + [""]


def _released_ties(wsg: dict[str, Any]) -> list[str]:
    """The pointing of g and its teacher under the released code's tie rule, beside the default's."""
    first = wsg.get("released_ties") or {}
    if not first:
        return []
    lines = ["", ("**Pointing and flat tops.** g's output block (as released: BN on one channel → ReLU → a 1→1 conv) "
                  "makes its map's maximum a plateau wherever that ReLU is dead, so many pixels tie for the maximum. "
                  "The released code's `np.argmax` takes the first of them in row-major order, the plateau's top edge; "
                  "the default here takes the centre of the thickest flat top (`wwbl.metrics.argmax_points`, "
                  "identical whenever the maximum is unique). Pointing under both rules:"), "",
             "| method | " + " | ".join(f"{t} point, centre / first" for t in SPLIT_TITLES.values()) + " |",
             "|---|" + "---|" * len(SPLIT_TITLES)]
    for label, per_split in first.items():
        cells = [f"{_cell(nested_get(wsg, 'rows', label, split), 'pointing')} / {_cell(per_split.get(split), 'pointing')}"
                 for split in SPLIT_TITLES]
        lines.append(f"| {ROW_TITLES.get(label, label)} | " + " | ".join(cells) + " |")
    return lines


def _delta(rows: dict[str, Any], split: str, key: str, a: str, b: str) -> float | None:
    try:
        return 100 * (rows[a][split][key] - rows[b][split][key])
    except (KeyError, TypeError):
        return None


def teacher_of(report: dict[str, Any]) -> str:
    return nested_get(report, "wsg", "teacher") or "gae"  # `--skip wsg` leaves no "wsg" part


def render_claim(report: dict[str, Any]) -> list[str]:
    """Does g beat the relevancy map it learns from (the paper: +10 box accuracy)? With diagnostics."""
    rows, teacher = report["wsg"]["rows"], teacher_of(report)
    lines = ["## Does g beat its teacher?", "",
             ("The paper reports that g's box accuracy exceeds that of the relevancy map it is trained against "
             f"(L_rmap) by about 10 points on Flickr30k, ReferIt and Visual Genome. Here the teacher is "
             f"{ROW_TITLES.get(teacher, teacher)} (`relevancy_start_layer` of `{report['settings']['g_config']}`)."), ""]
    for split, title in SPLIT_TITLES.items():
        box, point = _delta(rows, split, "bbox_acc", "g", teacher), _delta(rows, split, "pointing", "g", teacher)
        if box is None or point is None:
            lines.append(f"- {title}: not measured (a run failed).")
            continue
        verdict = ("reproduced (≥ +10)" if box >= 10 else "g is better, but by less than the paper's +10" if box > 0
                   else "**not reproduced**: g does not beat its teacher")
        lines.append(f"- {title}: box accuracy g − teacher = {box:+.1f} points, pointing "
                     f"{point:+.1f} points — {verdict}.")
    diag = report.get("diagnostics", {})
    if diag:
        lines += ["", "Diagnostics of the evaluated boxes (same items as the table):", "",
                  ("| source | split | no box | boxes / item | median area pred/GT | pred > 2× GT | pred < ½ GT | "
                  "point hit, box miss | box acc small / medium / large (items) |"), "|---|---|---|---|---|---|---|---|---|"]
        for label, per_split in diag.items():
            for split, d in per_split.items():
                sizes = " / ".join(f"{pct(b['bbox_acc'])} ({b['items']})" for b in d["by_size"].values())
                lines.append(f"| {label} | {SPLIT_TITLES[split]} | {pct(d['no_box'])} % | {d['boxes_per_item']:.2f} | "
                             f"{d['median_area_ratio']:.2f} | {pct(d['too_large'])} % | {pct(d['too_small'])} % | "
                             f"{pct(d['point_hit_box_miss'])} % | {sizes} |")
        lines += ["", "Size buckets by GT box area: " + ", ".join(next(iter(next(iter(diag.values())).values()))["by_size"])
                  + "."]
    lines += ["", "### Why", "", *analysis(report)]
    return lines + [""]


def render_claims(report: dict[str, Any]) -> list[str]:
    """Every claim the report tests, its measured margin and whether it holds."""
    found = report.get("claims") or []
    if not found:
        return []
    lines = ["## The paper's claims, checked", "", "| claim | split | margin (points) | needed | holds |",
             "|---|---|---|---|---|"]
    for c in found:
        margin = "–" if c["margin_points"] is None else f"{c['margin_points']:+.1f}"
        lines.append(f"| {c['claim']} | {SPLIT_TITLES.get(c['split'], c['split'])} | {margin} | "
                     f"≥ {c['needed_points']:+.0f} | {'yes' if c['holds'] else '**no**'} |")
    failing = [c for c in found if not c["holds"]]
    lines += ["", f"{len(found) - len(failing)} of {len(found)} hold."
              + (" The failing ones are named above; *Why* and the diagnostics show what limits them." if failing else "")]
    return lines + [""]


def render_history(report: dict[str, Any]) -> list[str]:
    """g's validation curve (the PNG the report command draws) and its numbers."""
    training = nested_get(report, "models", "g_training") or {}
    history = training.get("val_history") or []
    if not history:
        return []
    lines = ["## g's training curve", "", f"![g's val pointing and box accuracy per epoch]({report['g_history_png']})"
             if report.get("g_history_png") else "", "",
             f"Command: `{training.get('command')}`; exported checkpoint `{training.get('checkpoint')}` "
             f"(epoch {training.get('epoch')}, step {training.get('global_step')}, chosen by val pointing; val pointing "
             f"by the `{training.get('val_pointing_ties', 'first')}` tie rule, the teacher's dashed lines likewise).", "",
             "| epoch | step | val pointing | val box |", "|---|---|---|---|"]
    lines += [f"| {h['epoch']} | {h['step']} | {pct(h['pointing'])} | {pct(h['bbox_acc'])} |" for h in history]
    return lines + [""]


def nested_get(d: Any, *keys: Any) -> Any:
    """``d[k1][k2]…``, or None as soon as a level is missing (report JSON may lack failed parts)."""
    for key in keys:
        if not isinstance(d, dict) or key not in d:
            return None
        d = d[key]
    return d


def analysis(report: dict[str, Any]) -> list[str]:
    """Bullet points interpreting the measured numbers (each sentence is conditioned on them)."""
    out: list[str] = []
    val = report["wsg"].get("teacher_val", {})
    teacher = teacher_of(report)
    last, every = nested_get(val, "gae", "bbox_acc"), nested_get(val, "gae_all_blocks", "bbox_acc")
    if last is not None and every is not None:
        out.append(f"- **The teacher.** On the **val** split the last-block relevancy reaches "
                   f"{pct(nested_get(val, 'gae', 'pointing'))} % pointing / {pct(last)} % box accuracy and the all-block "
                   f"rollout (`start_layer 0`) {pct(nested_get(val, 'gae_all_blocks', 'pointing'))} % / {pct(every)} %; g is "
                   f"trained against {ROW_TITLES.get(teacher, teacher)} (`configs/shapes/g.yaml`).")
    diag = report.get("diagnostics", {})
    for split, title in SPLIT_TITLES.items():
        g, t = nested_get(diag, "g", split), nested_get(diag, teacher, split)
        if not g or not t:
            continue
        shape = ("larger" if g["median_area_ratio"] > 1.5 * t["median_area_ratio"] else
                 "smaller" if g["median_area_ratio"] < t["median_area_ratio"] / 1.5 else "similar")
        out.append(f"- **Boxes, {title}.** g's boxes are on median {g['median_area_ratio']:.2f}× the GT area "
                   f"({pct(g['too_large'])} % more than twice it, {pct(g['too_small'])} % less than half), GAE's "
                   f"{t['median_area_ratio']:.2f}× ({pct(t['too_large'])} % / {pct(t['too_small'])} %) for the teacher: g's are {shape}. "
                   f"g puts its point on the object but misses the box for {pct(g['point_hit_box_miss'])} % of the "
                   f"entities (teacher {pct(t['point_hit_box_miss'])} %); {pct(g['no_box'])} % of g's maps give no box.")
    ab = nested_get(report, "ablation", "rows") or {}
    if ab and all(nested_get(r, "test", "bbox_acc", "mean") is not None for r in ab.values()):
        out.append("- **Which losses matter** (held-out box accuracy, mean over seeds, equal budget): " + ", ".join(
            f"{r['description']} {pct(r['test']['bbox_acc']['mean'])} %" for r in ab.values()) + ".")
    g_kwargs = nested_get(report, "models", "g", "kwargs") or {}
    out.append("- **Set-up differences from the paper** (facts of this configuration, not tuned): g's VGG16 encoder "
               f"starts from random weights (no ImageNet weights offline) at 1/{g_kwargs.get('vgg_width_div', '?')} width "
               "and trains for minutes on two CPU cores, where the paper fine-tunes an ImageNet VGG16 for many GPU hours; "
               "the small CLIP is far weaker than OpenAI's (see *Models*).")
    return out


def render_wwbl(report: dict[str, Any]) -> list[str]:
    wwbl = report["wwbl"]
    lines = ["## What is where by looking (Algorithm 1; WWbL Table 7 in miniature)", "",
             "No text input: selective search + grid proposals (those covering more than "
             f"{_area_percent(wwbl)} of the frame; the reference keeps more than 10 %, which drops most shapes-world "
             "objects, 2–20 % of a scene) → the shapes BLIP (`" + wwbl["captioner"] + "`) captions "
             "every proposal → CLIP text embeddings → community detection (0.85, min size 2) → one heatmap per "
             "cluster from the source below → boxes. Each GT entity is matched to the nearest predicted caption in "
             "CLIP text space (GT phrases encoded without a prefix: the shapes CLIP never saw the reference's "
             "'image of '); pointing / box accuracy of that caption's heatmap and boxes, images without any "
             "prediction count as misses. In %.", ""]
    lines += metric_table(wwbl["rows"], {"g": "Algorithm 1 with **g**",
                                         "gae": f"Algorithm 1 with {ROW_TITLES.get(teacher_of(report), 'GAE')}"})
    empty = []
    for label, row in wwbl["rows"].items():
        for split, title in SPLIT_TITLES.items():
            r = row.get(split) or {}
            if "empty_images" in r:
                empty.append(f"{label} / {title}: {r['empty_images']} of {r['images']}")
    if empty:
        lines += ["", "Images with no prediction at all: " + "; ".join(empty) + "."]
    lines += _errors(wwbl["rows"])
    return lines + [""]


def _area_percent(wwbl: dict[str, Any]) -> str:
    """The proposal area filter of the WWbL rows, as a percentage (reports from before it: the reference's 10 %)."""
    return f"{100 * wwbl.get('min_proposal_area', MIN_PROPOSAL_AREA):g} %"


def _mean_std(result: dict[str, Any] | None, key: str) -> str:
    cell = (result or {}).get(key)
    if not isinstance(cell, dict):
        return "–"
    return f"{pct(cell['mean'])} ± {pct(cell['std'])}"


def render_ablation(report: dict[str, Any]) -> list[str]:
    ab = report["ablation"]
    seeds = ", ".join(str(x) for x in ab["seeds"])
    lines = ["## Loss ablation (WWbL Table 5 in miniature)", "",
             (f"g retrained from scratch for each row and each seed ({seeds}) with `train.py --config "
             f"{report['settings']['g_config']}` and the overrides shown, every run with the same budget: one epoch "
             f"of {ab['steps']} batches (`--trainer.max_epochs 1 --trainer.limit_train_batches {ab['steps']}`), "
             f"then exported and evaluated like the shipped g on the first {ab.get('limit')} images of each split. "
             "Mean ± standard deviation over the seeds, in %."),
             "", "| arm | overrides | held-out point | held-out box | open-world point | open-world box |",
             "|---|---|---|---|---|---|"]
    for arm, r in ab["rows"].items():
        if "error" in r:
            lines.append(f"| {r['description']} | {' '.join(r['overrides']) or '(none)'} | error | | | |")
            continue
        lines.append(f"| {r['description']} | {' '.join(r['overrides']) or '(none)'} | "
                     f"{_mean_std(r.get('test'), 'pointing')} | {_mean_std(r.get('test'), 'bbox_acc')} | "
                     f"{_mean_std(r.get('openworld'), 'pointing')} | {_mean_std(r.get('openworld'), 'bbox_acc')} |")
    lines += [f"- `{arm}` failed: {r['error']}" for arm, r in ab["rows"].items() if "error" in r]
    return lines + [""]


def render_reproduction(report: dict[str, Any]) -> list[str]:
    env = report["environment"]
    lines = ["## Reproduction", "", "```bash", report.get("command", "python -m shapes_world.report"), "```", "",
             f"Started {report['started_utc']} UTC; this invocation took {report['wall_clock_seconds'] / 60:.1f} min"
             + (" (`--resume`: finished runs were rescored from their records, not recomputed)" if report["settings"]["resume"]
                else "") + f"; the runs themselves took {sum(report['timings_seconds'].values()) / 60:.1f} min in total, on "
             f"{env['cpu']} ({env['cpu_count']} cores, {env['torch_threads']} torch threads, GPU: {env['gpu']}; the "
             "training budgets are in steps, so times are indicative only). Python " + env["python"] + ", " +
             ", ".join(f"{k} {v}" for k, v in env["packages"].items() if v) +
             f". Repository commit `{env['git_commit'][:12]}`" + (" with uncommitted changes" if env["git_dirty"] else "")
             + f". Seed {report['settings']['seed']} for every random choice (baselines, ablation trainings).", "",
             "Each row is one `wwbl.evaluation.run_evaluation` run; the equivalent commands:", ""]
    for section in ("wsg", "wwbl", "ablation"):
        for label, row in report.get(section, {}).get("rows", {}).items():
            for run in row.get("runs", []) if section == "ablation" else []:
                lines.append(f"- ablation `{label}` seed {run['seed']} training ({run['train_seconds']} s): "
                             f"`python {run['command']}`")
            for split, title in SPLIT_TITLES.items():
                r = row.get(split)
                if isinstance(r, dict) and "command" in r:
                    lines.append(f"- {section} `{label}` / {title} ({r['seconds']} s): `{r['command']}`")
    return lines + [""]


def render_markdown(report: dict[str, Any]) -> str:
    lines = ["# Shapes-world benchmark report", "",
             ("Generated by `python -m shapes_world.report` — do not edit by hand. All models are the small ones "
             "trained offline on the shapes world (CLIP `checkpoints/shapes_clip`, BLIP `checkpoints/shapes_blip`, "
             "g `checkpoints/shapes_g`); all numbers come from the real loaders and `python -m wwbl.evaluation`'s "
             "code. The raw numbers are in `report.json`."), ""]
    lines += render_models(report) + render_world(report)
    lines += render_claims(report) + render_history(report)
    if "wsg" in report:
        lines += render_wsg(report) + render_claim(report)
    if "wwbl" in report:
        lines += render_wwbl(report)
    if "ablation" in report:
        lines += render_ablation(report)
    lines += render_reproduction(report)
    return "\n".join(lines)
