// vtk.js writes VTK XML files with xmlbuilder2, which the viewer never does; its CommonJS
// dependency cycle breaks when bundled ("Object.defineProperty called on non-object"), so the
// bundle gets this stand-in.
export function create() {
  throw new Error('VTK XML writing is not part of the viewer');
}
export default { create };
