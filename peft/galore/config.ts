/**
 * GaLore options (METHODS.md §11), LLaMA-Factory keys and defaults:
 * use_galore (selects this folder with finetuning_type: full), galore_target
 * 'all', galore_rank 16, galore_update_interval 200, galore_scale 2.0,
 * galore_proj_type 'std', galore_layerwise false. They are built-in keys of
 * the config schema (src/config/schema.ts, group 'galore'), so LLaMA-Factory
 * configs validate without this folder; this is the same list, re-exported
 * as the method's own.
 */
export { galoreOptions } from '../../src/config/schema';
