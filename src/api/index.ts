/** The programmatic API (docs/api.md): `import { openGuest } from 'vmi'`. */
export {
  Guest,
  GuestClosedError,
  openGuest,
  PluginRunError,
  UnknownPluginError,
  type CallTiming,
  type GuestRun,
  type GuestSpec,
  type OpenGuestOptions,
  type PluginCall,
  type PluginResult,
} from './guest.js';
export { TargetError } from '../targets/lab.js';
export { ForeignGuestError } from '../targets/qmp.js';
export { ServerGoneError } from '../serve/client.js';
export { GuestBusyError } from '../util/guest-lock.js';
export type { ResultTable } from '../output/table.js';
