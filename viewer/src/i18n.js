// English and Spanish; a missing Spanish text falls back to English.
const ES = {
  'DICOM viewer': 'Visor DICOM',
  Series: 'Serie',
  Previous: 'Anterior',
  Next: 'Siguiente',
  'Window/level': 'Ventana/nivel',
  Zoom: 'Zoom',
  Pan: 'Desplazar',
  Length: 'Longitud',
  Reset: 'Restablecer',
  Download: 'Descargar',
  Close: 'Cerrar',
  Image: 'Imagen',
  of: 'de',
  Tools: 'Herramientas',
  'Loading…': 'Cargando…',
  'No study chosen.': 'No se eligió ningún estudio.',
  'This study is not found or not yours to see.': 'Este estudio no existe o no tiene permiso para verlo.',
  'The study could not be loaded': 'No se pudo cargar el estudio',
  'This series has no images.': 'Esta serie no tiene imágenes.',
  'The download failed': 'La descarga falló',
  'Scroll: wheel or arrow keys · Esc: close': 'Desplazar: rueda o flechas · Esc: cerrar',
};

export function t(lang, text) {
  return lang === 'es' ? ES[text] || text : text;
}
