/** Result tables, Arrow assembly and renderers. */
export * from './columns.js';
export * from './table.js';
export * from './format.js';
export * from './renderer.js';
export * from './registry.js';
export * from './sink.js';
export * from './write.js';
export * from './arrow-table.js';
