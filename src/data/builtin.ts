/**
 * The built-in registry: the 27 datasets of PEFT-Factory / PEFT-Bench
 * (DATASETS.md), keys as in PEFT-Factory's data/dataset_info.json. Each
 * dataset gives a training key (`sst2`, its train split) and an evaluation key
 * (`sst2_eval`: validation, or test where the dataset is scored on test);
 * MNLI also has `mnli_test` (validation_matched), as PEFT-Factory does.
 *
 * Sources, in order of preference:
 *  1. the canonical Hub repo, with the file paths of the Hub's own parquet
 *     layout (`{config}/{split}-00000-of-00001.parquet` for repos stored as
 *     parquet; `{config}/{split}/0000.parquet` on `refs/convert/parquet` for
 *     script-based repos); the paths of the 11 repos mirrored in
 *     shared/hub/datasets are the Hub's, the others follow the same layouts
 *     (`note` says where a path is not checked against the Hub);
 *  2. other Hub repos with the same rows (tongyx361/svamp, sahil2801/CodeAlpaca-20k);
 *  3. kinit/peft-factory, PEFT-Factory's preprocessed subsets (inputs/targets), in
 *     `push_to_hub`'s default layout (unchecked);
 *  4. the original distribution's files (GLUE .tsv, SuperGLUE .jsonl, ...),
 *     read from a local folder (`<dataset_dir>/<name>/raw` by default).
 */
import type { DatasetEntry, FileSourceSpec, HubSourceSpec, MetricFamily, SourceSpec, TaskKind, ColumnMap } from './entry';

/** The 57 MMLU subjects, in the alphabetical order of the Hub's `all` config. */
export const MMLU_SUBJECTS = [
  'abstract_algebra',
  'anatomy',
  'astronomy',
  'business_ethics',
  'clinical_knowledge',
  'college_biology',
  'college_chemistry',
  'college_computer_science',
  'college_mathematics',
  'college_medicine',
  'college_physics',
  'computer_security',
  'conceptual_physics',
  'econometrics',
  'electrical_engineering',
  'elementary_mathematics',
  'formal_logic',
  'global_facts',
  'high_school_biology',
  'high_school_chemistry',
  'high_school_computer_science',
  'high_school_european_history',
  'high_school_geography',
  'high_school_government_and_politics',
  'high_school_macroeconomics',
  'high_school_mathematics',
  'high_school_microeconomics',
  'high_school_physics',
  'high_school_psychology',
  'high_school_statistics',
  'high_school_us_history',
  'high_school_world_history',
  'human_aging',
  'human_sexuality',
  'international_law',
  'jurisprudence',
  'logical_fallacies',
  'machine_learning',
  'management',
  'marketing',
  'medical_genetics',
  'miscellaneous',
  'moral_disputes',
  'moral_scenarios',
  'nutrition',
  'philosophy',
  'prehistory',
  'professional_accounting',
  'professional_law',
  'professional_medicine',
  'professional_psychology',
  'public_relations',
  'security_studies',
  'sociology',
  'us_foreign_policy',
  'virology',
  'world_religions',
] as const;

// ---------------------------------------------------------------------------
// Source helpers

/** A repo stored as parquet on main: `{dir}/{split}-00000-of-00001.parquet`. */
function parquetRepo(repo: string, config: string, dir: string, splits: string[], extra: Partial<HubSourceSpec> = {}): HubSourceSpec {
  return { type: 'hub', repo, config, splits: Object.fromEntries(splits.map((s) => [s, [`${dir}/${s}-00000-of-00001.parquet`]])), ...extra };
}

/** A script-based repo's parquet conversion: `{config}/{split}/0000.parquet` on refs/convert/parquet. */
function converted(repo: string, config: string, splits: string[], extra: Partial<HubSourceSpec> = {}): HubSourceSpec {
  return {
    type: 'hub',
    repo,
    revision: 'refs/convert/parquet',
    config,
    splits: Object.fromEntries(splits.map((s) => [s, [`${config}/${s}/0000.parquet`]])),
    ...extra,
  };
}

const glue = (config: string, splits: string[]): HubSourceSpec => parquetRepo('nyu-mll/glue', config, config, splits);
const superGlue = (config: string, splits: string[]): HubSourceSpec => parquetRepo('aps/super_glue', config, config, splits);

/** PEFT-Factory's preprocessed subset of a dataset (columns inputs, targets). */
function kinit(subset: string, splits: string[]): HubSourceSpec {
  return parquetRepo('kinit/peft-factory', subset, subset, splits, {
    formatter: 'inputs_targets',
    note: "PEFT-Factory's preprocessed text (its own formatting); file layout assumed from push_to_hub, not checked",
  });
}

function raw(splits: Record<string, string[]>, extra: Partial<FileSourceSpec> = {}): FileSourceSpec {
  return { type: 'file', splits, ...extra };
}

const binary01 = (neg: string, pos: string) => ({ label: { '0': neg, '1': pos } });
const trueFalse = { label: { true: 'True', false: 'False' } };

// ---------------------------------------------------------------------------
// The table

interface DatasetDef {
  name: string;
  task: TaskKind;
  metric: MetricFamily;
  instruction: string;
  formatter: string;
  columns?: ColumnMap;
  labelColumn?: string;
  labelNames?: string[];
  labelWords?: string[];
  /** Training split (the `name` key) and evaluation split (`name_eval`). */
  train: string;
  eval: string;
  /** Extra keys → split (mnli_test). */
  more?: Record<string, string>;
  /** ReCoRD, APPS: one training example per answer. */
  expandTrain?: boolean;
  sources: SourceSpec[];
  description: string;
}

const BOOL = ['False', 'True'];
const CODE = 'Based on the following instruction, generate a valid Python code that answers it.';
const CHOICES_ABCD = 'Based on the question and provided choices, select the right answer. Respond only with the corresponding choices A, B, C, and D.';

const DEFS: DatasetDef[] = [
  {
    name: 'mnli',
    task: 'classification',
    metric: 'classification',
    description: 'MultiNLI (GLUE): premise / hypothesis entailment',
    instruction:
      'Classify the following premise and hypothesis pair into entailment, neutral, and contradiction classes. Respond only with the corresponding class.',
    formatter: 'columns',
    columns: { prompt: 'premise', query: 'hypothesis', response: 'label' },
    labelNames: ['entailment', 'neutral', 'contradiction'],
    train: 'train',
    eval: 'validation_mismatched',
    more: { mnli_test: 'validation_matched' },
    sources: [
      glue('mnli', ['train', 'validation_matched', 'validation_mismatched']),
      raw(
        { train: ['train.tsv'], validation_matched: ['dev_matched.tsv'], validation_mismatched: ['dev_mismatched.tsv'] },
        { rename: { sentence1: 'premise', sentence2: 'hypothesis', gold_label: 'label' } },
      ),
    ],
  },
  {
    name: 'qqp',
    task: 'classification',
    metric: 'classification',
    description: 'Quora Question Pairs (GLUE): duplicate questions',
    instruction: 'Classify the following question pair into duplicate and not_duplicate classes. Respond only with the corresponding class.',
    formatter: 'columns',
    columns: { prompt: 'question1', query: 'question2', response: 'label' },
    labelNames: ['not_duplicate', 'duplicate'],
    train: 'train',
    eval: 'validation',
    sources: [
      glue('qqp', ['train', 'validation']),
      raw({ train: ['train.tsv'], validation: ['dev.tsv'] }, { rename: { is_duplicate: 'label' }, map: binary01('not_duplicate', 'duplicate') }),
    ],
  },
  {
    name: 'qnli',
    task: 'classification',
    metric: 'classification',
    description: 'Question NLI (GLUE): does the sentence answer the question',
    instruction: 'Classify the following question and sentence pair into entailment and not_entailment classes. Respond only with the corresponding class.',
    formatter: 'columns',
    columns: { prompt: 'question', query: 'sentence', response: 'label' },
    labelNames: ['entailment', 'not_entailment'],
    train: 'train',
    eval: 'validation',
    sources: [glue('qnli', ['train', 'validation']), raw({ train: ['train.tsv'], validation: ['dev.tsv'] })],
  },
  {
    name: 'sst2',
    task: 'classification',
    metric: 'classification',
    description: 'Stanford Sentiment Treebank (GLUE): sentence sentiment',
    instruction: 'Classify the following sentence into negative and positive classes. Respond only with the corresponding class.',
    formatter: 'columns',
    columns: { prompt: 'sentence', response: 'label' },
    labelNames: ['negative', 'positive'],
    train: 'train',
    eval: 'validation',
    sources: [glue('sst2', ['train', 'validation']), raw({ train: ['train.tsv'], validation: ['dev.tsv'] }, { map: binary01('negative', 'positive') })],
  },
  {
    name: 'stsb',
    task: 'regression',
    metric: 'regression',
    description: 'STS Benchmark (GLUE): similarity score 0-5',
    instruction: 'Assign a similarity score from 0 to 5 to the following sentence pair. Respond only with the corresponding score.',
    formatter: 'columns',
    columns: { prompt: 'sentence1', query: 'sentence2', response: 'label' },
    train: 'train',
    eval: 'validation',
    sources: [
      glue('stsb', ['train', 'validation']),
      raw({ train: ['train.tsv'], validation: ['dev.tsv'] }, { rename: { score: 'label' }, numeric: ['label'] }),
    ],
  },
  {
    name: 'mrpc',
    task: 'classification',
    metric: 'classification',
    description: 'Microsoft Research Paraphrase Corpus (GLUE)',
    instruction: 'Classify the following sentence pair into not_equivalent and equivalent classes. Respond only with the corresponding class.',
    formatter: 'columns',
    columns: { prompt: 'sentence1', query: 'sentence2', response: 'label' },
    labelNames: ['not_equivalent', 'equivalent'],
    train: 'train',
    eval: 'validation',
    sources: [
      glue('mrpc', ['train', 'validation']),
      raw(
        { train: ['train.tsv'], validation: ['dev.tsv'] },
        { rename: { Quality: 'label', '#1 String': 'sentence1', '#2 String': 'sentence2' }, map: binary01('not_equivalent', 'equivalent') },
      ),
    ],
  },
  {
    name: 'rte',
    task: 'classification',
    metric: 'classification',
    description: 'Recognizing Textual Entailment (GLUE)',
    instruction: 'Classify the following sentence pair into entailment and not_entailment classes. Respond only with the corresponding class.',
    formatter: 'columns',
    columns: { prompt: 'sentence1', query: 'sentence2', response: 'label' },
    labelNames: ['entailment', 'not_entailment'],
    train: 'train',
    eval: 'validation',
    // Originals: GLUE's RTE .tsv, or SuperGLUE's RTE .jsonl (premise / hypothesis; the same 2,490 / 277 examples).
    sources: [
      glue('rte', ['train', 'validation']),
      raw({ train: ['train.tsv'], validation: ['dev.tsv'] }),
      raw({ train: ['train.jsonl'], validation: ['val.jsonl'] }, { rename: { premise: 'sentence1', hypothesis: 'sentence2' } }),
    ],
  },
  {
    name: 'cola',
    task: 'classification',
    metric: 'classification',
    description: 'Corpus of Linguistic Acceptability (GLUE)',
    instruction: 'Classify the following sentence into unacceptable and acceptable classes. Respond only with the corresponding class.',
    formatter: 'columns',
    columns: { prompt: 'sentence', response: 'label' },
    labelNames: ['unacceptable', 'acceptable'],
    train: 'train',
    eval: 'validation',
    sources: [
      glue('cola', ['train', 'validation']),
      // GLUE's CoLA .tsv has no header: source, label, the original annotation, sentence.
      raw(
        { train: ['train.tsv'], validation: ['dev.tsv'] },
        { header: ['source', 'label', 'original_label', 'sentence'], map: binary01('unacceptable', 'acceptable') },
      ),
    ],
  },
  {
    name: 'record',
    task: 'generation',
    metric: 'exact_match',
    description: 'ReCoRD (SuperGLUE): fill @placeholder with a passage entity',
    instruction: 'Based on the following query, entities, and passage, replace the @placeholder in the query. Respond only with the correct replacement.',
    formatter: 'record',
    train: 'train',
    eval: 'validation',
    expandTrain: true,
    sources: [
      superGlue('record', ['train', 'validation']),
      kinit('record', ['train', 'validation']),
      raw({ train: ['train.jsonl'], validation: ['val.jsonl'] }, { adapter: 'superglue_record' }),
    ],
  },
  {
    name: 'multirc',
    task: 'classification',
    metric: 'classification',
    description: 'MultiRC (SuperGLUE): is the answer correct',
    instruction:
      'Based on the following paragraph, question, and answer, determine whether the answer answers the question. Respond only with the corresponding true or false.',
    formatter: 'multirc',
    labelNames: BOOL,
    train: 'train',
    eval: 'validation',
    sources: [
      superGlue('multirc', ['train', 'validation']),
      kinit('multirc', ['train', 'validation']),
      raw({ train: ['train.jsonl'], validation: ['val.jsonl'] }, { adapter: 'superglue_multirc' }),
    ],
  },
  {
    name: 'boolq',
    task: 'classification',
    metric: 'classification',
    description: 'BoolQ (SuperGLUE): yes/no question about a passage',
    instruction: 'Based on the passage, respond to the following question with true or false. Respond only with the corresponding true or false.',
    formatter: 'columns',
    columns: { prompt: 'question', query: 'passage', response: 'label' },
    labelNames: BOOL,
    train: 'train',
    eval: 'validation',
    sources: [superGlue('boolq', ['train', 'validation']), raw({ train: ['train.jsonl'], validation: ['val.jsonl'] }, { map: trueFalse })],
  },
  {
    name: 'wic',
    task: 'classification',
    metric: 'classification',
    description: 'Words in Context (SuperGLUE)',
    instruction:
      'Based on the context from the following sentence pair, classify the word into true or false classes, based on its meaning in both of the sentences. Respond only with the corresponding true or false.',
    formatter: 'wic',
    labelNames: BOOL,
    train: 'train',
    eval: 'validation',
    sources: [
      superGlue('wic', ['train', 'validation']),
      kinit('wic', ['train', 'validation']),
      raw({ train: ['train.jsonl'], validation: ['val.jsonl'] }, { map: trueFalse }),
    ],
  },
  {
    name: 'wsc',
    task: 'classification',
    metric: 'classification',
    description: 'Winograd Schema Challenge (SuperGLUE wsc.fixed)',
    instruction:
      'Based on the following sentence, determine whether the pronoun marked with * * is referencing the noun marked with # #. Respond only with the corresponding true or false.',
    formatter: 'wsc',
    labelNames: BOOL,
    train: 'train',
    eval: 'validation',
    sources: [
      superGlue('wsc.fixed', ['train', 'validation']),
      kinit('wsc', ['train', 'validation']),
      raw({ train: ['train.jsonl'], validation: ['val.jsonl'] }, { adapter: 'superglue_wsc' }),
    ],
  },
  {
    name: 'cb',
    task: 'classification',
    metric: 'classification',
    description: 'CommitmentBank (SuperGLUE): three-way entailment',
    instruction:
      'Classify the following premise and hypothesis pair into entailment, contradiction, and neutral classes. Respond only with the corresponding class.',
    formatter: 'columns',
    columns: { prompt: 'premise', query: 'hypothesis', response: 'label' },
    labelNames: ['entailment', 'contradiction', 'neutral'],
    train: 'train',
    eval: 'validation',
    sources: [superGlue('cb', ['train', 'validation']), raw({ train: ['train.jsonl'], validation: ['val.jsonl'] })],
  },
  {
    name: 'copa',
    task: 'classification',
    metric: 'classification',
    description: 'Choice of Plausible Alternatives (SuperGLUE)',
    instruction:
      'Based on the following premise and choice pair, select the plausible alternative from the choice pair. Respond only with the corresponding choice1 or choice2.',
    formatter: 'copa',
    labelNames: ['choice1', 'choice2'],
    train: 'train',
    eval: 'validation',
    sources: [
      superGlue('copa', ['train', 'validation']),
      kinit('copa', ['train', 'validation']),
      raw({ train: ['train.jsonl'], validation: ['val.jsonl'] }, { map: binary01('choice1', 'choice2') }),
    ],
  },
  {
    name: 'mmlu',
    task: 'classification',
    metric: 'classification',
    description: 'MMLU (all subjects); trained on auxiliary_train',
    instruction: CHOICES_ABCD,
    formatter: 'mmlu',
    labelColumn: 'answer',
    labelNames: ['A', 'B', 'C', 'D'],
    train: 'auxiliary_train',
    eval: 'validation',
    sources: [
      parquetRepo('cais/mmlu', 'all', 'all', ['auxiliary_train', 'dev', 'validation', 'test']),
      kinit('mmlu', ['auxiliary_train', 'validation']),
      raw(
        {
          dev: MMLU_SUBJECTS.map((s) => `dev/${s}_dev.csv`),
          validation: MMLU_SUBJECTS.map((s) => `val/${s}_val.csv`),
          test: MMLU_SUBJECTS.map((s) => `test/${s}_test.csv`),
        },
        { adapter: 'mmlu_csv', header: false },
      ),
    ],
  },
  {
    name: 'piqa',
    task: 'classification',
    metric: 'classification',
    description: 'Physical Interaction QA',
    instruction: 'Based on the question and provided solutions, select the right solution. Respond only with the corresponding solution1 or solution2.',
    formatter: 'piqa',
    labelNames: ['0', '1'],
    labelWords: ['solution1', 'solution2'],
    train: 'train',
    eval: 'validation',
    sources: [
      converted('ybisk/piqa', 'plain_text', ['train', 'validation']),
      kinit('piqa', ['train', 'validation']),
      raw({ train: ['train.jsonl', 'train-labels.lst'], validation: ['valid.jsonl', 'valid-labels.lst'] }, { adapter: 'label_lines' }),
    ],
  },
  {
    name: 'siqa',
    task: 'classification',
    metric: 'classification',
    description: 'Social IQa',
    instruction: 'Based on the context, question and provided choices, select the right answer. Respond only with the corresponding choices A, B, and C.',
    formatter: 'siqa',
    labelNames: ['1', '2', '3'],
    labelWords: ['A', 'B', 'C'],
    train: 'train',
    eval: 'validation',
    sources: [
      converted('allenai/social_i_qa', 'default', ['train', 'validation']),
      kinit('siqa', ['train', 'validation']),
      raw({ train: ['train.jsonl', 'train-labels.lst'], validation: ['dev.jsonl', 'dev-labels.lst'] }, { adapter: 'label_lines' }),
    ],
  },
  {
    name: 'hellaswag',
    task: 'classification',
    metric: 'classification',
    description: 'HellaSwag: the ending that finishes the sentence',
    instruction:
      'Based on the sentence and provided endings, select the correct ending that finishes the sentence correctly. Respond only with the corresponding ending1, ending2, ending3, and ending4.',
    formatter: 'hellaswag',
    labelNames: ['0', '1', '2', '3'],
    labelWords: ['ending1', 'ending2', 'ending3', 'ending4'],
    train: 'train',
    eval: 'validation',
    sources: [
      converted('Rowan/hellaswag', 'default', ['train', 'validation', 'test'], {
        note: 'not in the test mirror; path follows the refs/convert/parquet layout',
      }),
      kinit('hellaswag', ['train', 'validation']),
      raw(
        { train: ['hellaswag_train.jsonl'], validation: ['hellaswag_val.jsonl'], test: ['hellaswag_test.jsonl'] },
        { map: { label: { '0': '0', '1': '1', '2': '2', '3': '3' } } },
      ),
    ],
  },
  {
    name: 'winogrande',
    task: 'classification',
    metric: 'classification',
    description: 'WinoGrande (winogrande_xl)',
    instruction:
      "Based on the sentence and provided options, select the best option that replaces the '_' character in the sentence. Respond only with the corresponding option1 or option2.",
    formatter: 'winogrande',
    labelColumn: 'answer',
    labelNames: ['1', '2'],
    labelWords: ['option1', 'option2'],
    train: 'train',
    eval: 'validation',
    sources: [
      converted('allenai/winogrande', 'winogrande_xl', ['train', 'validation', 'test'], {
        note: 'not in the test mirror; path follows the refs/convert/parquet layout',
      }),
      kinit('winogrande', ['train', 'validation']),
      raw({ train: ['train_xl.jsonl'], validation: ['dev.jsonl'], test: ['test.jsonl'] }),
    ],
  },
  {
    name: 'openbookqa',
    task: 'classification',
    metric: 'classification',
    description: 'OpenBookQA (main)',
    instruction: CHOICES_ABCD,
    formatter: 'openbookqa',
    labelColumn: 'answerKey',
    labelNames: ['A', 'B', 'C', 'D'],
    train: 'train',
    eval: 'validation',
    sources: [
      parquetRepo('allenai/openbookqa', 'main', 'main', ['train', 'validation', 'test']),
      kinit('openbookqa', ['train', 'validation']),
      raw({ train: ['train.tsv'], validation: ['dev.tsv'], test: ['test.tsv'] }, { adapter: 'openbookqa_tsv' }),
    ],
  },
  {
    name: 'math_qa',
    task: 'classification',
    metric: 'classification',
    description: 'MathQA: pick the option a-e',
    instruction: 'Based on the problem and provided options, select the right answer. Respond only with the corresponding choices a, b, c, d, and e.',
    formatter: 'math_qa',
    labelColumn: 'correct',
    labelNames: ['a', 'b', 'c', 'd', 'e'],
    train: 'train',
    eval: 'validation',
    sources: [
      converted('allenai/math_qa', 'default', ['train', 'validation', 'test']),
      kinit('math_qa', ['train', 'validation']),
      raw({ train: ['train.json'], validation: ['dev.json'], test: ['test.json'] }),
      // The original MathQA distribution's folder name.
      raw({ train: ['train.json'], validation: ['dev.json'], test: ['test.json'] }, { dir: 'mathqa/raw' }),
    ],
  },
  {
    name: 'gsm8k',
    task: 'math',
    metric: 'gsm8k',
    description: 'GSM8K (main): grade-school math, worked answers',
    instruction: "Answer following math question. The answer is always numerical. Mark your final answer with a newline starting with '####'.",
    formatter: 'gsm8k',
    train: 'train',
    eval: 'test',
    sources: [parquetRepo('openai/gsm8k', 'main', 'main', ['train', 'test']), raw({ train: ['train.jsonl'], test: ['test.jsonl'] })],
  },
  {
    name: 'svamp',
    task: 'math',
    metric: 'svamp',
    description: 'SVAMP: one-equation math word problems',
    instruction: 'Answer following math question. The answer is always numerical. Respond only with a single equation with parentheses (e.g., (1 + 1) = 2).',
    formatter: 'svamp',
    train: 'train',
    eval: 'test',
    sources: [
      parquetRepo('ChilleD/SVAMP', 'default', 'data', ['train', 'test'], {
        note: "PEFT-Factory's 700/300 split; not in the test mirror, path follows the parquet layout",
      }),
      // All 1,000 problems as one test split (not ChilleD's 300).
      parquetRepo('tongyx361/svamp', 'default', 'data', ['test'], { note: 'all 1,000 problems as test (a superset of ChilleD/SVAMP test)' }),
      kinit('svamp', ['train', 'test']),
      raw({ test: ['SVAMP.json'] }, { note: 'all 1,000 problems' }),
    ],
  },
  {
    name: 'conala',
    task: 'code',
    metric: 'generation',
    description: 'CoNaLa (curated): intent → Python snippet',
    instruction: CODE,
    formatter: 'conala',
    train: 'train',
    eval: 'test',
    sources: [converted('neulab/conala', 'curated', ['train', 'test']), raw({ train: ['conala-train.json'], test: ['conala-test.json'] })],
  },
  {
    name: 'codealpacapy',
    task: 'code',
    metric: 'generation',
    description: 'Code Alpaca, Python rows',
    instruction: CODE,
    formatter: 'columns',
    columns: { prompt: 'prompt', response: 'response' },
    train: 'train',
    eval: 'test',
    sources: [
      parquetRepo('Abzu/CodeAlpacaPython', 'default', 'data', ['train', 'test'], { note: 'not in the test mirror; path follows the parquet layout' }),
      // The full Code Alpaca (all languages; instruction/input/output), train only.
      converted('sahil2801/CodeAlpaca-20k', 'default', ['train'], { formatter: 'codealpaca', note: 'all of Code Alpaca, not only Python; train only' }),
      raw({ train: ['code_alpaca_20k.json'] }, { formatter: 'codealpaca' }),
      // The Code Alpaca repository's folder: its 20k file, or the 2k seed file of its first release.
      raw({ train: ['code_alpaca_20k.json'] }, { formatter: 'codealpaca', dir: 'codealpaca/raw' }),
      raw({ train: ['code_alpaca_2k.json'] }, { formatter: 'codealpaca', dir: 'codealpaca/raw', note: 'the 2k file of the Code Alpaca repository' }),
    ],
  },
  {
    name: 'apps',
    task: 'code',
    metric: 'generation',
    description: 'APPS: programming problems → Python solutions',
    instruction: CODE,
    formatter: 'apps',
    train: 'train',
    eval: 'test',
    expandTrain: true,
    sources: [
      {
        type: 'hub',
        repo: 'codeparrot/apps',
        config: 'all',
        splits: { train: ['train.jsonl'], test: ['test.jsonl'] },
        note: 'the repo ships jsonl; not in the test mirror',
      },
      kinit('apps', ['train', 'test']),
      raw({ train: ['train.jsonl'], test: ['test.jsonl'] }),
    ],
  },
];

function entriesOf(d: DatasetDef): DatasetEntry[] {
  const keys: [string, string][] = [[d.name, d.train], [`${d.name}_eval`, d.eval], ...Object.entries(d.more ?? {})];
  return keys.map(([key, split]) => {
    const e: DatasetEntry = {
      key,
      name: d.name,
      task: d.task,
      metric: d.metric,
      instruction: d.instruction,
      split,
      formatter: d.formatter,
      sources: d.sources,
      description: d.description,
    };
    if (d.columns) e.columns = d.columns;
    if (d.labelColumn) e.labelColumn = d.labelColumn;
    if (d.labelNames) e.labelNames = d.labelNames;
    if (d.labelWords) e.labelWords = d.labelWords;
    if (d.expandTrain && split === d.train) e.expand = true;
    return e;
  });
}

/** The 27 dataset names, in DATASETS.md order. */
export const BUILTIN_DATASET_NAMES: readonly string[] = DEFS.map((d) => d.name);

/** Every built-in entry (training, `_eval`, and `mnli_test`). */
export const BUILTIN_ENTRIES: readonly DatasetEntry[] = DEFS.flatMap(entriesOf);
