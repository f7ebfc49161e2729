"""The data: procedural toy cats, datasets on disk (the course's layout, any image folder), holes."""
