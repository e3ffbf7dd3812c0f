/** Opening any kind of target by its spec: one call, one shape ({ guest, close() }). */
import * as capture from './capture.js';
import * as lab from './lab.js';
import * as qmp from './qmp.js';
import type { OpenedTarget, OpenTargetOptions } from './target.js';

export type { GuestTarget, OpenedTarget, OpenTargetOptions } from './target.js';
export { withTarget } from './target.js';

/** Which guest to reach: a lab guest by name, a foreign QEMU by its QMP socket, or a capture. */
export type TargetSpec =
  | ({ kind: 'lab' } & lab.LabTargetSpec)
  | ({ kind: 'qmp' } & qmp.QmpTargetSpec)
  | ({ kind: 'capture' } & capture.CaptureTargetSpec);

export function openTarget(spec: TargetSpec, opts: OpenTargetOptions = {}): Promise<OpenedTarget> {
  switch (spec.kind) {
    case 'lab':
      return lab.open(spec, opts);
    case 'qmp':
      return qmp.open(spec, opts);
    case 'capture':
      return capture.open(spec, opts);
  }
}
