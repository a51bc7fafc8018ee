"""Upscaling: upscaler model files, running them, and the tiled enlarge-and-refine.

`files` finds upscaler models (ESRGAN and kin) where A1111 and ComfyUI keep them and
describes each from its tensors; `spandrel_import` loads spandrel (which reads those
files) without a working torchvision; `models` loads and runs one, pickles only
through torch's weights-only unpickler; `tiling` cuts a picture into overlapping
tiles and blends them back with feathered weights, a strip at a time, so memory
follows the tile size and not the picture's. docs/upscale.md has the whole story.
"""
