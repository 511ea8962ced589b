import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { CATEGORY, COMMANDS, CONTEXT_KEYS, SETTINGS, SETTINGS_SECTION, VIEWS } from '../../../extension/contributions.ts';
import { ROOT } from '../../support/harness.ts';

const manifest = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8'));

describe('extension manifest (package.json) matches extension/contributions.ts', () => {
  it('contributes every command with its title, icon and the "GPU Run" category, and no other', () => {
    const contributed = manifest.contributes.commands.map((c: { command: string; title: string; category: string; icon: string }) => [c.command, c.title, c.category, c.icon]);
    const typed = Object.values(COMMANDS).map((c) => [c.id, c.title, CATEGORY, c.icon]);
    assert.deepEqual(contributed.sort(), typed.sort());
  });

  it('contributes every setting with its default', () => {
    const props = manifest.contributes.configuration.properties;
    assert.deepEqual(Object.keys(props).sort(), Object.values(SETTINGS).map((s) => `${SETTINGS_SECTION}.${s.key}`).sort());
    for (const s of Object.values(SETTINGS)) assert.deepEqual(props[`${SETTINGS_SECTION}.${s.key}`].default, s.default, s.key);
  });

  it('has the views, menus and entry point the extension registers', () => {
    assert.deepEqual(manifest.contributes.viewsContainers.activitybar.map((c: { id: string }) => c.id), [VIEWS.container]);
    assert.deepEqual(manifest.contributes.views[VIEWS.container].map((v: { id: string }) => v.id), [VIEWS.jobs, VIEWS.hosts]);
    const inline = manifest.contributes.menus['view/item/context'].filter((m: { group: string }) => m.group.startsWith('inline'));
    assert.deepEqual(inline.map((m: { command: string }) => m.command), [COMMANDS.cancelJob.id, COMMANDS.showOutput.id, COMMANDS.rerunJob.id, COMMANDS.drainHost.id, COMMANDS.undrainHost.id]);
    // Drain and Undrain only for admins (the context key the extension sets from whoami), each on the rows it fits;
    // Move Job… on running jobs (a non-admin's view lists only their own).
    const menu = (id: string) => manifest.contributes.menus['view/item/context'].filter((m: { command: string }) => m.command === id).map((m: { when: string }) => m.when);
    assert.deepEqual([...new Set(menu(COMMANDS.drainHost.id))], [`view == ${VIEWS.hosts} && viewItem == host-up && ${CONTEXT_KEYS.isAdmin}`]);
    assert.deepEqual([...new Set(menu(COMMANDS.undrainHost.id))], [`view == ${VIEWS.hosts} && viewItem == host-draining && ${CONTEXT_KEYS.isAdmin}`]);
    assert.deepEqual(menu(COMMANDS.moveJob.id), [`view == ${VIEWS.jobs} && viewItem == job-running`]);
    assert.deepEqual(manifest.contributes.menus.commandPalette.map((m: { command: string; when: string }) => [m.command, m.when]), [[COMMANDS.drainHost.id, CONTEXT_KEYS.isAdmin], [COMMANDS.undrainHost.id, CONTEXT_KEYS.isAdmin]]);
    // One Run button in the editor title bar: the run menu's (editor/title would add a second, identical one).
    assert.ok(manifest.contributes.menus['editor/title/run'].some((m: { command: string; when: string }) => m.command === COMMANDS.runCurrentFile.id && m.when === 'resourceLangId == python'));
    assert.equal(manifest.contributes.menus['editor/title'], undefined);
    assert.equal(manifest.main, './dist/extension.cjs');
  });
});
