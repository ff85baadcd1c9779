// The Train tab's dataset preview, paged: the raw rows of a dataset's files, and the tokenized
// examples exactly as the trainer receives them with each token marked trained or masked (what
// `lmf data inspect` shows). Only the rows of the page are read and processed (max_samples caps
// the dataset), nothing is cached or written, and one preview runs at a time.
import { getDatasetAttrs } from "../data/registry.ts";
import { listDataFiles, readDataFiles } from "../data/loaders.ts";
import { IGNORE_INDEX } from "../data/types.ts";
import { UserError } from "../errors.ts";
import { parseTrainArgs } from "../hparams/index.ts";
import type { Workspace } from "./workspace.ts";

/** Rows per page at most, and the deepest page. */
export const PREVIEW_MAX_ROWS = 10;
export const PREVIEW_MAX_OFFSET = 100_000;

export interface RawPage {
  rows: unknown[];
  offset: number;
  /** Rows after this page exist. */
  more: boolean;
  files: string[];
}

export interface TokenPiece {
  id: number;
  text: string;
  trained: boolean;
}

export interface TokenizedExample {
  /** `input_ids`, or `chosen_input_ids`... for stages whose rows hold several sequences. */
  part: string;
  text: string;
  tokens: TokenPiece[];
  trainedCount: number;
}

export interface TokenizedPage {
  examples: TokenizedExample[][];
  offset: number;
  more: boolean;
  /** What the data pipeline reported (dropped rows, packing...). */
  notes: string[];
}

let queue: Promise<unknown> = Promise.resolve();

/** Runs previews one after another: each may load a tokenizer and process rows. */
function oneAtATime<T>(work: () => Promise<T>): Promise<T> {
  const result = queue.then(work, work);
  queue = result.catch(() => undefined);
  return result;
}

function datasetAttr(workspace: Workspace, datasetDir: string, name: string) {
  const [attr] = getDatasetAttrs([name], workspace.resolve(datasetDir || "data"));
  if (!workspace.contains(attr!.path)) throw new UserError(`dataset "${name}" reads ${attr!.path}, outside the folders this board was opened with`, "dataset");
  return attr!;
}

export function rawPage(workspace: Workspace, datasetDir: string, name: string, offset: number, limit: number): Promise<RawPage> {
  return oneAtATime(async () => {
    const attr = datasetAttr(workspace, datasetDir, name);
    const files = listDataFiles(attr.path);
    const rows: unknown[] = [];
    let index = 0;
    let more = false;
    const reader = readDataFiles(files);
    try {
      for await (const row of reader) {
        if (index >= offset + limit) {
          more = true;
          break;
        }
        if (index >= offset) rows.push(row.parseError ? { error: `${row.file} row ${row.row}: ${row.parseError}` } : row.data);
        index += 1;
      }
    } finally {
      await reader.return(undefined);
    }
    return { rows, offset, more, files: files.map((file) => workspace.display(file)) };
  });
}

/**
 * The token strips of one processed row: every `<part>input_ids` with its `<part>labels`; a PPO row
 * (`prompts`) is its prompt, nothing trained, as `lmf data inspect` shows it.
 */
function tokenStrips(row: Record<string, unknown>, decode: (ids: number[]) => string, prompts = false): TokenizedExample[] {
  if (prompts) {
    const ids = row.input_ids as number[];
    return [{ part: "input_ids", text: decode(ids), tokens: ids.map((id) => ({ id, text: decode([id]), trained: false })), trainedCount: 0 }];
  }
  const strips: TokenizedExample[] = [];
  for (const key of Object.keys(row).filter((name) => name.endsWith("input_ids"))) {
    const prefix = key.slice(0, -"input_ids".length);
    const ids = row[key] as number[];
    const labels = (row[`${prefix}labels`] as number[] | undefined) ?? [];
    const tokens = ids.map((id, t) => ({ id, text: decode([id]), trained: labels[t] !== undefined && labels[t] !== IGNORE_INDEX }));
    strips.push({ part: key, text: decode(ids), tokens, trainedCount: tokens.filter((token) => token.trained).length });
  }
  return strips;
}

/**
 * The processed examples `offset` to `offset + limit` of one dataset, with the form's settings
 * (template, cutoff_len, packing, train_on_prompt...). `settings` are checked values with absolute paths.
 */
export function tokenizedPage(settings: Record<string, unknown>, name: string, offset: number, limit: number): Promise<TokenizedPage> {
  return oneAtATime(async () => {
    const args = parseTrainArgs(
      {
        ...settings,
        do_train: true,
        dataset: [name],
        eval_dataset: null,
        val_size: 0,
        max_samples: offset + limit + 1,
        streaming: false,
        tokenized_path: null,
        overwrite_cache: false,
        preprocessing_num_workers: null,
      },
      { onWarning: () => undefined },
    );
    // The trainer's own data path; loaded here only, so the board starts without the engine.
    const { prepareTrainingData } = await import("../train/workflow.ts");
    const notes: string[] = [];
    const data = await prepareTrainingData(args, (line) => notes.push(line));
    const decode = (ids: number[]) => data.tokenizer.decode(ids, { skipSpecialTokens: false });
    const rows = data.train as unknown as Record<string, unknown>[];
    const examples = rows.slice(offset, offset + limit).map((row) => tokenStrips(row, decode, args.finetuning.stage === "ppo"));
    return { examples, offset, more: rows.length > offset + limit, notes };
  });
}
