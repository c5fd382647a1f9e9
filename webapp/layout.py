"""The page: mask canvas, settings, results, kept pairs and the batch tab, wired to :class:`Page`."""
from __future__ import annotations

import gradio as gr

from ldm.diffusion.samplers import SAMPLERS
from webapp.canvas import DISPLAY, canvas_side
from webapp.handlers import MAX_VARIANTS, MODE_LABELS, Page, guarded

# requests that use the model share one queue slot: one model on one device
MODEL_QUEUE = dict(concurrency_limit=1, concurrency_id="model")
KEEP_QUEUE = dict(concurrency_limit=1, concurrency_id="kept")


def build(page: Page, title: str = "DefFiller") -> gr.Blocks:
    engine = page.engine
    size, side = engine.size, canvas_side(engine.size)
    names = [c.name for c in engine.categories]
    with gr.Blocks(title=title, analytics_enabled=False) as demo:
        gr.Markdown(f"## {title}: draw a defect mask, generate the defect, keep the pair\n"
                    f"Checkpoint `{engine.ckpt.name}` · {size}×{size} px · {engine.pipe.device} · "
                    f"kept pairs go to `{page.kept.root}`")
        result, selected = gr.State(None), gr.State(0)
        with gr.Row():
            with gr.Column(scale=3):
                with gr.Tabs():
                    with gr.Tab("Draw and generate", id="draw"):
                        with gr.Row():
                            with gr.Column():
                                editor = gr.ImageEditor(
                                    value=page.blank(), label=f"Mask ({size}×{size}): white = defect",
                                    canvas_size=(side, side), fixed_canvas=True, image_mode="RGB", sources=(),
                                    type="numpy", layers=False, transforms=(), height=DISPLAY + 80,
                                    brush=gr.Brush(colors=["#ffffff"], color_mode="fixed",
                                                   default_size=max(2, side // 24)),
                                    eraser=gr.Eraser(default_size=max(2, side // 24)), elem_id="mask_canvas")
                                with gr.Row():
                                    upload = gr.UploadButton("Upload mask PNG", file_types=["image"],
                                                             elem_id="upload_mask", size="sm")
                                    clear = gr.Button("Clear", size="sm", elem_id="clear_mask")
                                    new_mask = gr.Button("New mask (mask producer)", size="sm",
                                                         visible=engine.maskgen is not None, elem_id="new_mask")
                                mask_note = gr.Markdown(elem_id="mask_note")
                                origin = gr.Textbox("canvas", label="Mask source (recorded with kept pairs)",
                                                    interactive=False, max_lines=1, elem_id="mask_source")
                                generate = gr.Button("Generate", variant="primary", elem_id="generate")
                            with gr.Column():
                                results = gr.Gallery(label="Generated (mask outlined in red)", columns=2,
                                                     height=DISPLAY + 80, object_fit="contain", allow_preview=False,
                                                     format="png", elem_id="results")
                                timing = gr.Markdown(elem_id="timing")
                                keep = gr.Button("Keep the selected image", elem_id="keep")
                                kept_note = gr.Markdown(elem_id="kept_note")
                    with gr.Tab("Batch", id="batch"):
                        gr.Markdown("A folder of masks, or new masks from the mask producer, into a paired "
                                    "dataset (the same loop as `infer.py`), with the settings on the right.")
                        mask_dir = gr.Textbox(label="Folder of mask PNGs (on this computer)", elem_id="batch_dir")
                        with gr.Row():
                            n_new = gr.Number(0, precision=0, minimum=0, label="or: new masks per category",
                                              visible=engine.maskgen is not None, elem_id="batch_new")
                            new_cats = gr.CheckboxGroup(names, label="of the categories (none: all)",
                                                        visible=engine.maskgen is not None)
                        with gr.Row():
                            batch_name = gr.Textbox("batch", label=f"Dataset folder name (under {page.batch_root})",
                                                    elem_id="batch_name")
                            per_mask = gr.Number(1, precision=0, minimum=1, label="images per mask")
                        background_dir = gr.Textbox(label="Backgrounds / start images: folder or image "
                                                          "(implant and SDEdit; default: the uploaded image)")
                        run_batch = gr.Button("Make the dataset", variant="primary", elem_id="run_batch")
                        batch_note = gr.Markdown(elem_id="batch_note")
                        batch_preview = gr.Image(label="preview.png", interactive=False, elem_id="batch_preview")
            with gr.Column(scale=1, min_width=260):
                category = gr.Radio(names, value=None, label="Category", elem_id="category")
                mode = gr.Radio(list(MODE_LABELS.values()), value=MODE_LABELS["generate"], label="Mode",
                                elem_id="mode")
                image = gr.Image(type="filepath", label="Image (background to implant into / start image)",
                                 sources=["upload"], visible=False, height=220, elem_id="background")
                strength = gr.Slider(0.05, 1.0, value=0.8, step=0.05, label="Strength (fraction of steps run)",
                                     visible=False, elem_id="strength")
                recommended = engine.recommended
                sampler = gr.Dropdown(sorted(SAMPLERS), value=recommended["sampler"], label="Sampler",
                                      elem_id="sampler")
                steps = gr.Slider(1, 200, value=page.default_steps(recommended["sampler"]), step=1, label="Steps",
                                  elem_id="steps")
                guidance = gr.Slider(1.0, 10.0, value=recommended["guidance_scale"], step=0.5, label="Guidance",
                                     elem_id="guidance")
                seed = gr.Number(0, precision=0, label="Seed", elem_id="seed")
                variants = gr.Slider(1, MAX_VARIANTS, value=2, step=1, label="Variants", elem_id="variants")
        with gr.Accordion("Kept pairs", open=True):
            kept = gr.Gallery(value=page.gallery, label="Kept (newest first)", columns=8, height=200,
                              fit_columns=False, object_fit="contain", allow_preview=False, elem_id="kept")
            with gr.Row():
                zip_button = gr.Button("Zip the kept pairs", size="sm", elem_id="zip")
                zip_file = gr.File(label="Download", interactive=False, height=80, elem_id="zip_file")

        def remember(evt: gr.SelectData) -> int:
            return evt.index

        upload.upload(guarded(page.upload_mask, keep_outputs=2), upload, [editor, origin, mask_note],
                      show_progress="hidden")
        clear.click(lambda: (page.blank(), "canvas", ""), None, [editor, origin, mask_note], queue=False)
        new_mask.click(guarded(page.new_mask, keep_outputs=2), [category, seed], [editor, origin, mask_note],
                       **MODEL_QUEUE)
        mode.change(page.image_visibility, mode, [image, strength], queue=False)
        sampler.change(page.default_steps, sampler, steps, queue=False)
        generate.click(guarded(page.generate),
                       [editor, origin, category, mode, image, strength, sampler, steps, guidance, seed, variants],
                       [results, timing, result, selected], **MODEL_QUEUE)
        results.select(remember, None, selected)
        keep.click(guarded(page.keep), [result, selected], [kept, kept_note], **KEEP_QUEUE)
        zip_button.click(guarded(page.zip), None, zip_file, **KEEP_QUEUE)
        run_batch.click(guarded(page.batch),
                        [mask_dir, n_new, batch_name, per_mask, new_cats, mode, image, background_dir, strength,
                         sampler, steps, guidance, seed], [batch_note, batch_preview], **MODEL_QUEUE)
    return demo
