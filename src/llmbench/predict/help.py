"""The column legend ``llmbench predict --help`` prints after its options: what each column
of the one-device table and of ``--gpus N`` means (``COLUMNS``), and how sizes are read
(``SIZES``); ``llmbench.cli.predict`` puts ``--frontier``'s text between them. Imports nothing."""

COLUMNS = """\
columns (GiB = 2^30 bytes):
  load                   predicted allocated memory after load (the resident weights and
                         quantization state); the load's own peak, higher by the largest
                         weight a checkpoint conversion builds (a mixture of experts' expert
                         fusion) or bitsandbytes quantizes on load (a checkpoint not
                         pre-quantized), counts in need
  prefill, decode        predicted peak allocated memory of the phase (what
                         torch.cuda.max_memory_allocated reports; traced or replayed, not
                         measured)
  need                   an upper envelope of what the device holds at the largest peak:
                         peak allocated + allocator slack (memory PyTorch's caching
                         allocator reserves but does not use: the envelope of the H100
                         reference cells) + the CUDA context; a cell may run below it
                         (maybe), e.g. the H200's int8 eager 4 x 8192 needs 176 GiB here
                         and ran with 137.6 GiB reserved (predict --frontier simulates the
                         allocator instead)
  fits                   yes: need <= the device's PyTorch total (the header's)
                         maybe: the allocations fit (peak allocated + CUDA context <=
                           that total), the fragmentation envelope does not: the allocator
                           decides (PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True helps)
                         no: the allocations alone do not fit
                         unsupported: cannot run whatever the memory (flash-attn on the CPU;
                           flash or cuDNN attention in float32; refusals measured on the
                           H200 decode reference; OPT past its learned positions; max_memory
                           under device_map single); the reason is printed, memory is "-"
                         unknown: no prediction for this model
  checked                was this prediction checked against a GPU measurement (the
                         committed references' cells, results/reference/**/tables):
                         yes: one-GPU cells of the same model, quantization and its knobs
                           (quantized on load or from a pre-quantized checkpoint: csv's
                           quantized_on_load), KV cache, attention, dtype, decode mode and
                           placement were
                           measured, every one within 1 % of the prediction, and enclose
                           this cell (one no larger in batch and length, one no smaller)
                         shape: that setting was measured within 1 %, not around this
                           batch and length (or the run decodes another number of tokens);
                           checked_note also says where this very cell ran out of memory
                         no: never measured (csv's checked_note names which setting), or
                           measured and off by more than 1 %
                         -: no verdict to check (unsupported, unknown)
  dominant               the term that holds the most memory at the peak (traced: the
                         tracer's activations, not split into terms)
  method                 which method answered: tracer (the model code run on the meta
                         device) or hand replay (llmbench.predict's replay); `checked`
                         says whether a GPU measurement backs it

several GPUs (--gpus N): one line per device of each cell. transformers' own planner
(_get_device_map: get_balanced_memory + infer_auto_device_map over compute_module_sizes, as
from_pretrained runs it) places the modules on N GPUs of the device, each with its PyTorch
total minus the CUDA context free (and the cell's max_memory as a cap; on ONE GPU without
max_memory the planner keeps 10 % free, as transformers does); the tracer then charges
weights, activations, the KV cache of the layers each GPU holds, the copies accelerate makes
between GPUs and the logits (copied back to the first GPU) to devices.
  device_map             the planner's policy: --device-map, else the cell's device_map
                         (auto when the cell's is config, as from_pretrained's auto/balanced)
  weights                bytes of parameters and buffers on the device
  load                   predicted allocated after load on the device
  prefill, decode        predicted peak allocated of each phase on the device
  need, fits             as above, per device (slack from the device's peak minus weights;
                         the load's transient on the device that holds the converted weight)
  GPUs needed            the fewest GPUs of the device (1 .. --max-gpus) on which every
                         device fits (yes) under that policy; none: not even --max-gpus
  modules                the device's modules (decoder layers as a range)
A cell the planner cannot place on the GPUs (modules left on cpu/disk) fits no; a quantized
cell is unknown (its placement goes through transformers' quantizer, not predicted). The last
line counts cells, each by its worst device's fits, and the GPUs they need.
"""
"""The columns of the one-device table and of ``--gpus N``."""

SIZES = """\
A device is --gpu NAME (a GPU measured here; the default is the config's predict_gpu,
h100-80gb as shipped, except for --frontier, which takes one or more) or --gpu-mem SIZE, its
total as nvidia-smi reports it: 81559MiB (nvidia-smi's MiB = 2^20 bytes), 24GB (10^9 bytes:
22.35 GiB), 80GiB, or a bare number of GiB; a card sold as "80GB" is not 80GB: pass
nvidia-smi's total or --gpu. The same in every mode.
Cells are fitted into PyTorch's total of it: less the memory the driver keeps and never
reports to torch (480 MiB on the H100 80GB, 615 MiB on the H200, measured; 615 MiB assumed for
another GPU); the header prints both totals, the csv the device (gpu) and PyTorch's total
(gpu_mem_gib).
--terms lists every term of each cell's peak, one a line. --format csv prints one header row,
then every number, one row per cell (with --terms, one column per term): no preamble, closing
line or reasons outside its `fits` and `reason` columns.
"""
"""How ``--gpu`` and ``--gpu-mem`` are read, ``--terms`` and ``--format csv``."""
