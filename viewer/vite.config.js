// Builds the viewer into ./static (shipped in the Python package, served at /viewer/). Vite resolves
// the codecs' .wasm files and the decode worker into hashed assets next to the bundle.
import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vite';

export default defineConfig({
  base: '/viewer/',
  resolve: {
    alias: { xmlbuilder2: fileURLToPath(new URL('./src/stubs/xmlbuilder2.js', import.meta.url)) },
  },
  build: {
    outDir: 'static',
    emptyOutDir: true,
    target: 'es2022',
    chunkSizeWarningLimit: 8000,
    sourcemap: false,
  },
  worker: { format: 'es' },
});
