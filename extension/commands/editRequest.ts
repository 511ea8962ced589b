/**
 * A job request as a list to run from at once ("Run", first) or to change a line of first: command, GPUs, queue, time,
 * memory, CPUs, image, env. Used by the last step of Run on GPU… (memory, CPUs, image, env) and by Rerun with Changes
 * (everything). Picking a line asks for its value and comes back to the list.
 */
import * as vscode from 'vscode';
import type { SubmitRequest } from '../../server/protocol/jobs.ts';
import { DEFAULT, fieldLine, PROMPTS, setField, show, type EditField } from '../core/editFields.ts';

export async function editRequest(req: SubmitRequest, title: string, fields: EditField[]): Promise<SubmitRequest | undefined> {
  let cur = req;
  for (;;) {
    type Item = vscode.QuickPickItem & { field?: EditField };
    const items: Item[] = [{ label: '$(play) Run', description: 'with the settings below' }, ...fields.map((f) => ({ field: f, label: fieldLine(cur, f), ...(f === 'env' ? { description: 'plus the settings gpurun.env and gpurun.envFile' } : {}) }))];
    const pick = await vscode.window.showQuickPick(items, { title });
    if (!pick) return undefined;
    if (!pick.field) return cur;
    const f = pick.field;
    const value = show(cur, f);
    const v = await vscode.window.showInputBox({
      title: `${title}: ${f}`,
      prompt: PROMPTS[f],
      value: value === DEFAULT || value === 'none' || value === "the queue's default" ? '' : value,
      validateInput: (t) => {
        const r = setField(cur, f, t);
        return typeof r === 'string' ? r : undefined;
      },
    });
    if (v === undefined) continue;
    const r = setField(cur, f, v);
    if (typeof r !== 'string') cur = r;
  }
}
