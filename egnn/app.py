"""``egnn app``: a local web page to label a folder of images with a few-shot model (Gradio).

Choose a checkpoint, a folder of example images per class, and a folder (or a drop) of images to label; the page
shows the model's answer for each image, one group at a time (a class, ``unknown``, or the images suggested for
labeling next), most confident first, suggestions starred. Click an image, then *Accept* the model's class or pick
another and *Label as*: the image joins that class's examples and everything else is relabeled. *Save CSV* writes
the labels and offers them for download. Any bad input is a message on the page.

The page reads only the checkpoint (and its saved unknown calibration), the example folder and the images to label,
and writes only into the output folder: the CSV, and Gradio's copies of the images it shows or receives (its cache,
``GRADIO_TEMP_DIR``, is pointed there). :class:`~egnn.labeling.LabelingSession` does the work.
"""

import os
import tempfile
from pathlib import Path

from egnn.errors import UserError

SUGGESTED = "suggested"


def group_choices(session) -> list[tuple[str, str]]:
    """``(shown, value)`` pairs of the group selector: the suggestions, each class, then ``unknown``."""
    if session is None:
        return []
    groups = session.groups()
    picks = sum(p.suggested > 0 for p in session.proposals)
    out = [(f"★ to label next ({picks})", SUGGESTED)] if picks else []
    return out + [(f"{name} ({len(items)})", name) for name, items in groups.items()]


def group_items(session, group: str | None):
    """The proposals of one group, in the order shown."""
    if session is None or not session.proposals:
        return []
    if group == SUGGESTED:
        return sorted((p for p in session.proposals if p.suggested), key=lambda p: p.suggested)
    return session.groups().get(group or "", [])


def caption(p) -> str:
    star = f" ★{p.suggested}" if p.suggested else ""
    return f"{p.label} {p.confidence:.2f}{star} · {p.path.name}"


def build(checkpoint: str = "", support: str = "", images: str = "", out: str = "egnn_labels",
          suggestions: int = 5, device: str = "cpu"):
    """The Gradio Blocks of the page (not launched)."""
    import gradio as gr

    from egnn.labeling import LabelingSession
    from egnn.predict import query_files

    def failed(exc: Exception) -> str:
        if isinstance(exc, UserError):
            return f"**Problem:** {exc}"
        return f"**Problem:** {type(exc).__name__}: {exc}"  # one line, never a traceback

    def view(session, group, note=""):
        choices = group_choices(session)
        values = [v for _, v in choices]
        group = group if group in values else (values[0] if values else None)
        items = group_items(session, group)
        status = note or (session.summary() if session else "")
        classes = session.classes if session else []
        return (session, gr.update(choices=choices, value=group), [(str(p.path), caption(p)) for p in items],
                status, gr.update(choices=classes, value=None), None, "")

    def start(ckpt, support_dir, images_dir, dropped, session, group):
        try:
            files = [Path(f) for f in (dropped or [])]
            if images_dir.strip():
                files += query_files(images_dir.strip())
            if not files:
                raise UserError("no images to label: give a folder of images, or drop some on the page")
            if not ckpt.strip() or not support_dir.strip():
                raise UserError("give a checkpoint (a run's best.pt) and a folder of examples, one subfolder per class")
            session = LabelingSession(ckpt.strip(), support_dir.strip(), files, suggestions=suggestions, device=device)
            return view(session, None)
        except Exception as exc:  # noqa: BLE001 - every failure becomes a message on the page
            return view(session, group, failed(exc))

    def select(session, group, evt: gr.SelectData):
        items = group_items(session, group)
        if not items or evt.index is None or evt.index >= len(items):
            return gr.update(), "", "**Problem:** that image is no longer in this group; choose another"
        p = items[evt.index]
        answer = "unknown (nearest: " + p.nearest + ")" if p.label == "unknown" else p.label
        return gr.update(value=p.nearest), str(p.path), (f"**{p.path.name}**: the model says {answer}, confidence "
                                                          f"{p.confidence:.2f}, known-score {p.known_score:.2f}")

    def label(session, group, path, chosen, accept):
        if session is None or not path:
            return view(session, group, "**Problem:** click an image first")
        try:
            session.label(path, None if accept else chosen)
            return view(session, group, f"labeled {Path(path).name}; relabeled the rest. {session.summary()}")
        except Exception as exc:  # noqa: BLE001
            return view(session, group, failed(exc))

    def save(session):
        if session is None:
            return None, "**Problem:** label some images first"
        try:
            path = session.write_csv(Path(out) / "labels.csv")
            return str(path), f"wrote {path} ({len(session.rows())} images)"
        except Exception as exc:  # noqa: BLE001
            return None, failed(exc)

    with gr.Blocks(title="egnn: label a folder") as page:
        gr.Markdown("## Label a folder of images from a few examples per class")
        state = gr.State(None)
        with gr.Row():
            ckpt = gr.Textbox(checkpoint, label="Checkpoint (a run's best.pt)", elem_id="checkpoint")
            support_box = gr.Textbox(support, label="Examples: a folder with one subfolder per class", elem_id="support")
            images_box = gr.Textbox(images, label="Images to label: a folder", elem_id="images")
        drop = gr.File(file_count="multiple", file_types=["image"], label="... or drop images here", elem_id="drop")
        run = gr.Button("Label", variant="primary", elem_id="label")
        status = gr.Markdown("", elem_id="status")
        group = gr.Radio([], label="Show", elem_id="group")
        gallery = gr.Gallery(label="Images, most confident first (★: label these next)", columns=8, height="auto",
                             allow_preview=False, elem_id="gallery")
        with gr.Row():
            chosen_path = gr.Textbox("", label="Selected image", interactive=False, elem_id="selected")
            chosen_class = gr.Dropdown([], label="Its class", elem_id="class")
            accept = gr.Button("Accept the model's class", elem_id="accept")
            relabel = gr.Button("Label as", elem_id="label-as")
        selected_note = gr.Markdown("", elem_id="selected-note")
        with gr.Row():
            save_button = gr.Button("Save CSV", elem_id="save")
            csv_file = gr.File(label="labels.csv", elem_id="csv")

        outputs = [state, group, gallery, status, chosen_class, csv_file, chosen_path]
        run.click(start, [ckpt, support_box, images_box, drop, state, group], outputs)
        group.input(lambda s, g: view(s, g), [state, group], outputs)
        gallery.select(select, [state, group], [chosen_class, chosen_path, selected_note])
        accept.click(lambda s, g, p, c: label(s, g, p, c, True), [state, group, chosen_path, chosen_class], outputs)
        relabel.click(lambda s, g, p, c: label(s, g, p, c, False), [state, group, chosen_path, chosen_class], outputs)
        save_button.click(save, [state], [csv_file, status])
    return page


def launch(checkpoint: str = "", support: str = "", images: str = "", out: str = "egnn_labels", port: int = 7860,
           suggestions: int = 5, device: str = "cpu", open_browser: bool = True, block: bool = True):
    """Serve the page on ``127.0.0.1:port``; Gradio's cache, matplotlib's and the temporary files of PyG go to
    ``out/.gradio``. Returns the Blocks (with
    ``block=False``, serving in a background thread: ``page.close()`` stops it)."""
    out_dir = Path(out).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    scratch = out_dir / ".gradio"
    os.environ["GRADIO_TEMP_DIR"] = str(scratch)  # Gradio's copies of the images it serves; read at its import
    os.environ["MPLCONFIGDIR"] = str(scratch / "matplotlib")  # Gradio imports matplotlib, which caches fonts
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    (scratch / "tmp").mkdir(parents=True, exist_ok=True)
    tempfile.tempdir = str(scratch / "tmp")  # PyG writes the code of its message-passing layers to a temp file
    try:
        import gradio  # noqa: F401
    except ImportError:
        raise UserError('egnn app needs Gradio: pip install -e ".[app]"') from None
    page = build(checkpoint, support, images, str(out_dir), suggestions, device)
    allowed = [str(Path(p).resolve()) for p in (support, images) if p] + [str(out_dir)]
    page.launch(server_name="127.0.0.1", server_port=port, inbrowser=open_browser, prevent_thread_lock=not block,
                allowed_paths=allowed, show_error=False, quiet=not block)
    return page
