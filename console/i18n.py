"""English and Spanish of the console. Keys are the English text; only what the portal does not
already say is here: the rest (Email, Reports, Save...) comes from the portal's one dictionary."""
from __future__ import annotations

from portal import LANGS, PORTAL_ES, translate_in

ES = {
    "Staff console": "Consola del personal", "Patients": "Pacientes", "Unmatched studies": "Estudios sin asignar", "Search patients": "Buscar pacientes",
    "Gender": "Sexo", "Visit date from": "Fecha de visita desde", "Visit date to": "Fecha de visita hasta",
    "Case type": "Tipo de caso", "Any": "Cualquiera", "Filter": "Filtrar", "Reset": "Restablecer",
    "New patient": "Nuevo paciente", "First name": "Nombre", "Last name": "Apellidos",
    "Date of birth": "Fecha de nacimiento", "Alias (no personal data)": "Alias (sin datos personales)",
    "Send invitation": "Enviar invitación", "Create": "Crear", "Create scan ticket": "Crear orden de escaneo",
    "Merge patients": "Fusionar pacientes", "Preview": "Vista previa", "Confirm merge": "Confirmar fusión",
    "Attach to patient": "Asignar al paciente", "male": "hombre", "female": "mujer", "other": "otro",
    "unknown": "desconocido", "Male": "Hombre", "Female": "Mujer", "Other": "Otro", "Name": "Nombre", "Age": "Edad", "Mobile phone": "Teléfono móvil", "Landline": "Teléfono fijo",
    "ID number": "Número de identificación", "Medical insurance card number": "Número de tarjeta sanitaria",
    "Contact address": "Dirección de contacto", "Note": "Nota", "Next page": "Página siguiente",
    "No patients found.": "No se encontraron pacientes.", "Enter a first name.": "Escriba el nombre.",
    "Enter a last name.": "Escriba los apellidos.", "Enter a valid email address.": "Escriba un correo electrónico válido.",
        "A patient with this email already exists on the platform. Request access to the profile instead of creating a new one.":
        "Ya existe un paciente con este correo en la plataforma. Solicite acceso al perfil en lugar de crear uno nuevo.",
    "Request access": "Solicitar acceso", "The access request was sent.": "La solicitud de acceso fue enviada.",
    "Your password (confirms the invitation)": "Su contraseña (confirma la invitación)",
    "Enter your password to confirm the invitation.": "Escriba su contraseña para confirmar la invitación.",
    "The patient was created.": "El paciente fue creado.", "The invitation was sent.": "La invitación fue enviada.",
    "Scan type": "Tipo de escaneo", "Intraoral": "Intraoral", "Face scan": "Escaneo facial", "CBCT": "CBCT",
    "X-ray": "Radiografía", "Visit type": "Tipo de visita", "Doctor": "Doctor/a", "Scheduled for": "Programado para",
    "First visit": "Primera visita", "Follow-up": "Seguimiento", "Emergency": "Urgencia",
    "Orthodontics": "Ortodoncia", "Implant": "Implante", "Restoration": "Restauración", "General": "General",
    "Scanner AE title (optional)": "Título AE del escáner (opcional)",
    "The scan ticket was created.": "La orden de escaneo fue creada.", "Scan tickets": "Órdenes de escaneo",
    "Accession": "Número de acceso", "Scheduled": "Programada", "Completed": "Completada", "active": "activa",
    "completed": "completada", "revoked": "anulada", "Choose a scan type.": "Elija un tipo de escaneo.",
    "Demographics": "Datos personales", "Records": "Historial", "Images": "Imágenes", "Tags": "Etiquetas", "Edit": "Editar",
    "Edit patient": "Editar paciente", "The patient was saved.": "El paciente se guardó.",
    "Unlink from my organization": "Desvincular de mi organización", "Reactivate": "Reactivar",
    "Close account": "Cerrar cuenta", "The patient was removed from your list.": "El paciente fue retirado de su lista.",
    "The account is closed.": "La cuenta está cerrada.", "The patient is active again.": "El paciente está activo de nuevo.",
    "Inactive": "Inactivo", "Active": "Activo", "Invited": "Invitado", "Add tag": "Añadir etiqueta", "Tag": "Etiqueta",
    "The tag was added.": "La etiqueta fue añadida.", "Remove": "Quitar", "The tag was removed.": "La etiqueta fue quitada.",
    "View": "Ver", "PDF": "PDF", "Open viewer": "Abrir visor", "No images.": "No hay imágenes.",
    "No reports.": "No hay informes.", "No documents.": "No hay documentos.", "No records.": "No hay registros.",
    "Not shared with other organizations.": "No se comparte con otras organizaciones.",
    "Shared with": "Compartido con", "imaging only": "solo imágenes", "everything": "todo",
    "From": "Desde", "To": "Hasta", "Show": "Mostrar", "Find similar patients": "Buscar pacientes similares", "Name or contact": "Nombre o contacto",
    "Find": "Buscar", "Merge into": "Fusionar en", "Select": "Seleccionar",
    "These patients will be merged into %(name)s. Their records, scan tickets and studies move; their profiles are kept, inactive.":
        "Estos pacientes se fusionarán en %(name)s. Sus registros, órdenes y estudios se trasladan; sus perfiles se conservan, inactivos.",
    "What moves": "Qué se traslada", "Nothing moves.": "No se traslada nada.",
    "Choose at least one patient to merge.": "Elija al menos un paciente para fusionar.",
    "The patients were merged.": "Los pacientes fueron fusionados.",
    "The data changed since the preview: check the preview again.": "Los datos cambiaron desde la vista previa: revísela de nuevo.",
    "This cannot be undone.": "Esto no se puede deshacer.",
    "Study": "Estudio", "Patient ID (DICOM)": "ID de paciente (DICOM)", "Name (DICOM)": "Nombre (DICOM)",
    "Modality": "Modalidad", "Existing patient": "Paciente existente", "Make a new patient": "Crear paciente nuevo",
    "No unmatched studies.": "No hay estudios sin asignar.", "The study was attached.": "El estudio fue asignado.",
    "Choose a patient.": "Elija un paciente.", "Keywords": "Palabras clave", "Search": "Buscar",
    "Reports without a patient": "Informes sin paciente", "No reports without a patient.": "No hay informes sin paciente.",
    "The report was attached.": "El informe fue asignado.", "Patient": "Paciente", "Reply": "Responder", "Send reply": "Enviar respuesta", "Your reply was sent.": "Su respuesta fue enviada.",
    "Write your reply.": "Escriba su respuesta.", "No messages.": "No hay mensajes.", "Thread": "Conversación",
        "This login is not a staff login.": "Este usuario no es del personal.", "Back to patient": "Volver al paciente", "Invite to the portal": "Invitar al portal",
    "Alias": "Alias", "New tag": "Nueva etiqueta", "Choose a gender.": "Elija el sexo.",
    "Choose a case type.": "Elija un tipo de caso.", "Choose a visit type.": "Elija un tipo de visita.",
    "Enter a date and time.": "Escriba una fecha y hora.",
    "Enter a valid AE title (up to 16 letters or digits).": "Escriba un título AE válido (hasta 16 letras o dígitos).",
    "Portal account": "Cuenta del portal",
    "invited": "invitada", "closed": "cerrada", "created": "creó", "read": "leyó", "changed": "modificó",
    "deleted": "borró", "searched or ran": "buscó o ejecutó",
    "Observations": "Observaciones", "No observations.": "No hay observaciones.", "Thumbnail of": "Miniatura de", "QR code": "Código QR",
    "QR code of the report's share link": "Código QR del enlace para compartir el informe",
    "Scan to open this report's PDF.": "Escanee para abrir el PDF de este informe.", "No notes.": "No hay notas.", "New note": "Nueva nota", "Write the note first.": "Escriba la nota primero.", "Meetings": "Reuniones", "Meeting": "Reunión", "Not on any meeting list.": "No está en ninguna reunión.",
    "Add to meeting": "Añadir a la reunión", "All meetings": "Todas las reuniones", "No meetings.": "No hay reuniones.",
    "New meeting": "Nueva reunión", "Meeting name": "Nombre de la reunión", "Meeting date": "Fecha de la reunión",
    "Create meeting": "Crear reunión", "patients": "pacientes", "Enter a name.": "Escriba un nombre.",
    "The meeting was created.": "La reunión fue creada.",
    "The patient was added to the meeting.": "El paciente fue añadido a la reunión.",
    "The patient was removed from the meeting.": "El paciente fue retirado de la reunión.",
    "No patients on this meeting yet: add them from a patient's page.":
        "Aún no hay pacientes en esta reunión: añádalos desde la página de un paciente.",
    "New report": "Nuevo informe", "Report title": "Título del informe", "Create report": "Crear informe",
    "preliminary": "preliminar", "final": "definitivo", "Enter a title.": "Escriba un título.",
    "Choose at least one observation or image.": "Elija al menos una observación o imagen.",
    "The report was created.": "El informe fue creado.", "Accept request of": "Aceptar la solicitud de", "Reject request of": "Rechazar la solicitud de",
    "The patient owns this profile and answers access requests in their portal.":
        "El paciente es dueño de este perfil y responde a las solicitudes de acceso en su portal.",
    "No pending access requests.": "No hay solicitudes de acceso pendientes.",
    "The access request was accepted.": "La solicitud de acceso fue aceptada.",
    "The access request was rejected.": "La solicitud de acceso fue rechazada.",
    "The email of this profile stays reserved: a new profile cannot use it. Reactivate the profile to bring it back to your list.":
        "El correo de este perfil sigue reservado: un perfil nuevo no puede usarlo. Reactive el perfil para devolverlo a su lista.", "Notes": "Notas", "Visit": "Visita",
}


def translate(lang: str, text: str, **kw: object) -> str:
    return translate_in((ES, PORTAL_ES), lang, text, **kw)


__all__ = ["ES", "LANGS", "translate"]
