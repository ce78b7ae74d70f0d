// Model cards for the weights freemask ships: what the model is, the data it saw, how it was trained (config,
// steps, wall time, machine), the arithmetic of its budget, its loss curve and its evaluation, and the
// commands that reproduce it. Written as the README.md of the model's folder (the Hugging Face convention).

import { curveAxes } from '../io/plot.ts';

export interface ModelCard {
  title: string;
  /** What the model is and what freemask uses it for. */
  summary: string;
  /** Class and configuration, e.g. "diffusers AutoencoderKL, block_out_channels [16, 32, 64]". */
  architecture: string;
  parameters: number;
  /** How the training data is made (it is regenerated, never downloaded). */
  data: string;
  /** Trainer options as saved in the checkpoint. */
  options: Record<string, unknown>;
  steps: number;
  /** Wall-clock seconds of training (NaN when unknown). */
  seconds: number;
  machine: string;
  /** FLOP-based estimate written before the run. */
  budget?: string;
  /** The loss log and the file name of its picture, relative to the card. */
  loss: { values: readonly number[]; picture: string };
  /** Metric name → value (with its unit or target in the name). */
  evaluation: Record<string, string | number>;
  /** Shell commands that reproduce the weights. */
  reproduce: string[];
  notes?: string[];
}

const fmt = (v: unknown) => (typeof v === 'number' ? (Number.isInteger(v) ? String(v) : v.toPrecision(4)) : typeof v === 'string' ? v : JSON.stringify(v));

export function modelCardMarkdown(c: ModelCard): string {
  const { lo, hi } = curveAxes(c.loss.values);
  const tail = c.loss.values.slice(-Math.max(1, Math.round(c.loss.values.length / 20)));
  const finalLoss = tail.reduce((a, b) => a + b, 0) / tail.length;
  const hours = Number.isFinite(c.seconds) ? `${(c.seconds / 3600).toFixed(2)} h (${Math.round(c.seconds)} s)` : 'not recorded';
  return `# ${c.title}

${c.summary}

| | |
|---|---|
| architecture | ${c.architecture} |
| parameters | ${(c.parameters / 1e6).toFixed(3)} M |
| training steps | ${c.steps} |
| training time | ${hours} |
| machine | ${c.machine} |

## Data

${c.data}

## Training

${Object.entries(c.options).map(([k, v]) => `- ${k}: ${fmt(v)}`).join('\n')}
${c.budget ? `\nBudget, written before the run: ${c.budget}\n` : ''}
![loss curve](${c.loss.picture})

Loss per step (grey) and its moving average (blue); x: steps 0–${c.loss.values.length}, y: log scale from ${lo} to ${hi}.
Mean loss over the last 5% of the steps: ${finalLoss.toPrecision(4)}.

## Evaluation

${Object.entries(c.evaluation).map(([k, v]) => `| ${k} | ${fmt(v)} |`).join('\n').replace(/^/, '| metric | value |\n|---|---|\n')}
${c.notes?.length ? `\n## Notes\n\n${c.notes.map((n) => `- ${n}`).join('\n')}\n` : ''}
## Reproduce

\`\`\`sh
${c.reproduce.join('\n')}
\`\`\`
`;
}
