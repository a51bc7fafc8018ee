"""Control layers: ControlNets (plain and union), reference images (IP-Adapter) and
the preprocessors that turn a picture into a control image.

`files`: what a control-related file is, from its safetensors header alone.
`loading`: those files into modules, offline, with shipped configs.
`preprocess` (+ `canny`, `depth`): a picture -> the control image a model expects.
`pipeline`: a job's controls and reference -> the pipeline and its arguments.
"""
